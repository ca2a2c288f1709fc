"""Fine-tuning with SGD + cosine schedule, augmentation, optional KD from the dense model."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgeprune.data import Dataset, ImageSet
from edgeprune.metrics import evaluate
from edgeprune.recover.augment import random_crop_flip
from edgeprune.ui import QUIET, UI


@dataclass(frozen=True)
class RecoverConfig:
    """How to fine-tune a pruned model.

    ``kd_alpha`` weights the distillation term (soft targets at ``temperature``)
    against the label loss when a teacher is given; ``max_images`` caps the
    images seen per epoch (None = the whole train split).
    """

    epochs: float = 1.0
    batch_size: int = 128
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 5e-4
    kd_alpha: float = 0.7
    temperature: float = 4.0
    augment: bool = True
    bn_recalibrate: bool = False
    val_fraction: float = 0.0
    patience: int | None = None
    max_images: int | None = None
    seed: int = 0
    checkpoint_dir: str | None = None
    bn_l1: float = 0.0  # network-slimming L1 penalty on BN scales


@dataclass
class RecoverResult:
    """What fine-tuning did."""

    model: nn.Module
    epochs_run: float
    images_per_s: float
    history: list[dict[str, float]] = field(default_factory=list)


def _train_split(data: Dataset | ImageSet) -> ImageSet:
    return data.train if isinstance(data, Dataset) else data


def recover(model: nn.Module, data: Dataset | ImageSet, teacher: nn.Module | None = None,
            config: RecoverConfig | None = None, ui: UI = QUIET, **overrides: Any) -> RecoverResult:
    """Fine-tune ``model`` in place on ``data`` (its train split), distilling from ``teacher`` if given."""
    cfg = config or RecoverConfig()
    if overrides:
        from dataclasses import replace

        cfg = replace(cfg, **overrides)
    train = _train_split(data)
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    n_total = len(train)
    val: ImageSet | None = None
    if cfg.val_fraction > 0:
        perm = rng.permutation(n_total)
        n_val = max(1, int(n_total * cfg.val_fraction))
        val, train = train.subset(np.sort(perm[:n_val])), train.subset(np.sort(perm[n_val:]))
        n_total = len(train)
    per_epoch = min(n_total, cfg.max_images or n_total)
    steps_per_epoch = max(1, per_epoch // cfg.batch_size)
    total_steps = max(1, int(round(cfg.epochs * steps_per_epoch)))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps)))
    start_step, history = _resume(cfg, model, opt, sched)
    if teacher is not None:
        teacher.eval()
    best, bad_epochs, seen, t0 = -1.0, 0, 0, time.perf_counter()
    step = start_step
    with ui.progress("fine-tune", total=total_steps) as bar:
        bar.advance(start_step)
        while step < total_steps:
            perm = rng.permutation(n_total)[:per_epoch]
            for i in range(0, steps_per_epoch * cfg.batch_size, cfg.batch_size):
                if step >= total_steps:
                    break
                idx = np.sort(perm[i : i + cfg.batch_size])
                imgs = train.images[idx]
                if cfg.augment:
                    imgs = random_crop_flip(imgs, rng)
                x = train.normalise(imgs)
                y = torch.as_tensor(train.labels[idx], dtype=torch.long)
                model.train()
                logits = model(x)
                loss = F.cross_entropy(logits, y)
                if teacher is not None and cfg.kd_alpha > 0:
                    with torch.no_grad():
                        t_logits = teacher(x)
                    T = cfg.temperature
                    kd = F.kl_div(F.log_softmax(logits / T, 1), F.softmax(t_logits / T, 1), reduction="batchmean") * T * T
                    loss = (1 - cfg.kd_alpha) * loss + cfg.kd_alpha * kd
                if cfg.bn_l1 > 0:
                    loss = loss + cfg.bn_l1 * sum(m.weight.abs().sum() for m in model.modules() if isinstance(m, nn.BatchNorm2d))
                if not torch.isfinite(loss):
                    from edgeprune.errors import EdgepruneError

                    raise EdgepruneError(f"fine-tuning diverged at step {step} (loss {loss.item()}); lower the learning rate")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                step += 1
                seen += len(idx)
                rate = seen / max(time.perf_counter() - t0, 1e-9)
                bar.advance(1, info=f"loss {loss.item():.3f} {rate:.0f} img/s")
                if step % steps_per_epoch == 0 or step == total_steps:
                    entry = {"step": step, "epoch": step / steps_per_epoch, "loss": float(loss.item())}
                    if val is not None:
                        entry["val_top1"] = evaluate(model, val)
                    history.append(entry)
                    _checkpoint(cfg, model, opt, sched, step, history)
                    if val is not None and cfg.patience is not None:
                        if entry["val_top1"] > best:
                            best, bad_epochs = entry["val_top1"], 0
                        else:
                            bad_epochs += 1
                            if bad_epochs > cfg.patience:
                                ui.log(f"early stop at epoch {entry['epoch']:.1f} (val top-1 {entry['val_top1']:.2f})")
                                total_steps = step
                                break
    model.eval()
    if cfg.bn_recalibrate:
        recalibrate_bn(model, train, cfg.batch_size)
    elapsed = max(time.perf_counter() - t0, 1e-9)
    return RecoverResult(model, step / steps_per_epoch, seen / elapsed, history)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, data: ImageSet, batch_size: int = 256, batches: int = 20) -> None:
    """Re-estimate BN running statistics on ``data`` (cumulative average) without touching weights."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for i, (x, _) in enumerate(data.batches(batch_size)):
        if i >= batches:
            break
        model(x)
    model.eval()


def _checkpoint(cfg: RecoverConfig, model: nn.Module, opt: Any, sched: Any, step: int, history: list) -> None:
    if not cfg.checkpoint_dir:
        return
    from edgeprune.fileio import atomic_path

    path = Path(cfg.checkpoint_dir) / "finetune.ckpt"
    with atomic_path(path) as tmp:
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                    "step": step, "history": history}, tmp)


def _resume(cfg: RecoverConfig, model: nn.Module, opt: Any, sched: Any) -> tuple[int, list]:
    if not cfg.checkpoint_dir:
        return 0, []
    path = Path(cfg.checkpoint_dir) / "finetune.ckpt"
    if not path.exists():
        return 0, []
    # our own checkpoint of tensors and numbers: weights_only is enough and runs no code
    ck = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["opt"])
    sched.load_state_dict(ck["sched"])
    return int(ck["step"]), list(ck["history"])
