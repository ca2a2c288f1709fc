"""Engine emitters, one per backend (``ort``, ``tvm``, ``trt``, ``vta``), registered by name."""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeprune.config import Target, get_target
from edgeprune.registry import Registry


@dataclass
class Engine:
    """A compiled model for one target: its files, a manifest, and a way to run it (when possible here)."""

    target: Target
    out_dir: Path
    files: dict[str, Path]
    manifest: dict[str, Any] = field(default_factory=dict)
    runner: Callable[[np.ndarray], np.ndarray] | None = None

    def onnx_engine(self) -> tuple[Path | None, list[str]]:
        """The ONNX file this engine runs (int8 QDQ when quantised; None if it has none) and the ORT optimisers
        its session disables."""
        return self.files.get("onnx_int8", self.files.get("onnx")), list(self.manifest.get("disabled_optimizers", []))

    def run(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """Run the engine on a batch (NCHW float32); one image at a time if the engine is batch-1."""
        if self.runner is None:
            raise RuntimeError(f"the {self.target.name} engine cannot run on this machine")
        x = x.numpy() if isinstance(x, torch.Tensor) else x
        return np.concatenate([np.asarray(self.runner(x[i : i + 1])).reshape(1, -1) for i in range(len(x))])


# emitter(model, target, out_dir, example, options) -> Engine
Emitter = Callable[[nn.Module, Target, Path, torch.Tensor, dict[str, Any]], Engine]
EMITTERS: Registry[Emitter] = Registry("emitter")


def _load_all() -> None:
    for mod in ("ort", "tvm", "trt", "vta"):
        try:
            importlib.import_module(f"edgeprune.compile.{mod}")
        except ModuleNotFoundError as err:
            if err.name != f"edgeprune.compile.{mod}":
                raise


def compile(model: nn.Module, target: Target | str, out: str | Path, example: torch.Tensor, **options: Any) -> Engine:
    """Emit the engine of ``model`` for ``target`` into ``out`` (files + manifest.json)."""
    target = get_target(target)
    _load_all()
    emitter = EMITTERS.get(target.backend)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return emitter(model, target, out, example, dict(options))


__all__ = ["EMITTERS", "Engine", "compile"]

from edgeprune._callable import make_callable

make_callable(__name__, "compile")
