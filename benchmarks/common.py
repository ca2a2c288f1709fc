"""What several benchmarks share: the fine-tuned dense reference (cached outside git), torchvision on the CPU torch."""
from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "benchmarks" / "cache"


def recipe_key(d: dict) -> str:
    """A short stable hash of a recipe (names cache files)."""
    return hashlib.sha1(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]


def headline_recipe(seed: int = 0, threads: int | None = 1, **changes: Any) -> Any:
    """The headline's recovery recipe for the CIFAR ResNets (3 epochs x 15,000 images, batch 128, the rest
    RecoverConfig's defaults), with ``changes``: what the ablation and planner-weighting benchmarks start from."""
    from edgeprune.recover import RecoverConfig

    return RecoverConfig(**{"epochs": 3, "max_images": 15000, "batch_size": 128, "seed": seed, "threads": threads, **changes})


def dense_reference(pretrained: nn.Module, model_name: str, ds: Any, rc: Any, cache: Path = CACHE, ui: Any = None,
                    log: Callable[[str], None] = print) -> tuple[nn.Module, str]:
    """``pretrained`` fine-tuned with recipe ``rc`` (labels only) on ``ds``'s train split, cached by recipe.

    The headline benchmark's dense reference (and teacher); the importance benchmark
    grades criteria on the same model. Returns the model (eval mode) and the recipe key.
    """
    from edgeprune.recover import recover

    short = model_name.split("-")[0]
    key = recipe_key({"model": model_name, "data": ds.name, "n": len(ds.train),
                      "rc": {k: v for k, v in vars(rc).items() if k not in ("threads", "memory_format")}})
    path = Path(cache) / f"dense-{short}-{key}.pt"
    dense = copy.deepcopy(pretrained)
    if path.exists():
        dense.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        log(f"dense reference: loaded fine-tuned weights from {path}")
    else:
        per_epoch = min(len(ds.train), rc.max_images or len(ds.train))
        log(f"dense reference: fine-tuning {rc.epochs} epoch(s) x {per_epoch} images (cached to {path})")
        recover(dense, ds, None, rc, ui=ui, checkpoint_dir=str(Path(cache) / f"ckpt-{short}-{key}" / "dense"))
        Path(cache).mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(dense.state_dict(), tmp)
        tmp.replace(path)
    return dense.eval(), key


def torchvision_models() -> Any:
    """torchvision on the CPU torch (its CUDA wheel's C++ ops do not load here): edgeprune.models.hub declares them."""
    from edgeprune.models.hub import import_torchvision

    return import_torchvision()
