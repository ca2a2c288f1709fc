"""A small SGD loop with hooks, for the methods that act inside training (masks, scores, centroids).

``edgeprune.recover`` is the fine-tuning step of the pipeline; the methods here
need to touch every step (re-apply a sparsity mask, update a RigL topology,
average gradients per k-means cluster), so they share this loop instead:
SGD (Nesterov) with a cosine schedule, random crop + flip, cross-entropy, and
three hooks: ``before_step(step)`` after ``backward`` (edit gradients),
``after_step(step)`` after the optimiser step (re-apply masks), and
``extra_loss(model)`` (regularisers).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgeprune.data import Dataset, ImageSet
from edgeprune.errors import BadInput, EdgepruneError


def train_split(data: Dataset | ImageSet) -> ImageSet:
    """The train split of a Dataset, or the ImageSet itself."""
    return data.train if isinstance(data, Dataset) else data


def test_split(data: Dataset | ImageSet) -> ImageSet:
    """The test split of a Dataset, or the ImageSet itself."""
    return data.test if isinstance(data, Dataset) else data


def steps_for(data: Dataset | ImageSet, epochs: float, batch_size: int, max_images: int | None = None) -> int:
    """Optimiser steps in ``epochs`` passes over (at most ``max_images`` of) the train split."""
    n = len(train_split(data))
    n = min(n, max_images or n)
    return max(0, round(epochs * math.ceil(n / max(1, min(batch_size, n)))))


@dataclass
class LoopResult:
    """Steps run and the mean loss of each tenth of the run."""

    steps: int
    losses: list[float] = field(default_factory=list)


def batches_forever(train: ImageSet, batch_size: int, rng: np.random.Generator, augment: bool = True,
                    max_images: int | None = None) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled (x, y) batches, epoch after epoch (random crop with padding + flip when ``augment``)."""
    from edgeprune.recover.augment import Normaliser, random_crop_flip

    norm = Normaliser(train.mean, train.std)
    n = len(train)
    pool = np.arange(n)
    if max_images and max_images < n:
        pool = np.sort(rng.permutation(n)[:max_images])
    bs = min(batch_size, len(pool))
    while True:
        perm = pool[rng.permutation(len(pool))]
        for i in range(0, len(perm) - bs + 1, bs):
            idx = np.sort(perm[i : i + bs])
            imgs = train.images[idx]
            if augment:
                imgs = random_crop_flip(imgs, rng, pad=max(1, imgs.shape[1] // 8))
            yield norm(imgs), torch.as_tensor(train.labels[idx], dtype=torch.long)


def sgd_loop(model: nn.Module, data: Dataset | ImageSet, steps: int, *, lr: float = 0.01, batch_size: int = 64,
             momentum: float = 0.9, weight_decay: float = 5e-4, augment: bool = True, seed: int = 0,
             max_images: int | None = None, params: list[nn.Parameter] | None = None,
             extra_loss: Callable[[nn.Module], torch.Tensor] | None = None,
             before_step: Callable[[int], None] | None = None, after_step: Callable[[int], None] | None = None,
             extra_optimizer: Any = None, teacher: nn.Module | None = None, kd_alpha: float = 0.0,
             temperature: float = 4.0, progress: Any = None) -> LoopResult:
    """Train ``model`` in place for ``steps`` SGD steps; see the module docstring for the hooks.

    ``extra_optimizer`` (e.g. Adam over mask scores) steps right after the SGD step.
    """
    if steps <= 0:
        return LoopResult(0)
    if lr <= 0 or batch_size < 1:
        raise BadInput(f"bad training options: lr={lr}, batch_size={batch_size}")
    train = train_split(data)
    if len(train) == 0:
        raise BadInput("no training images")
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    params = params if params is not None else [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=momentum > 0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    it = iter(batches_forever(train, batch_size, rng, augment, max_images))
    losses: list[float] = []
    chunk, acc, cnt = max(1, steps // 10), 0.0, 0
    if teacher is not None:
        teacher.eval()
    for step in range(steps):
        x, y = next(it)
        model.train()
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        if teacher is not None and kd_alpha > 0:
            with torch.no_grad():
                t = teacher(x)
            kd = F.kl_div(F.log_softmax(logits / temperature, 1), F.softmax(t / temperature, 1),
                          reduction="batchmean") * temperature**2
            loss = (1 - kd_alpha) * loss + kd_alpha * kd
        if extra_loss is not None:
            loss = loss + extra_loss(model)
        lv = float(loss.detach())
        if not math.isfinite(lv):
            raise EdgepruneError(f"training diverged at step {step} (loss {lv}); lower the learning rate")
        opt.zero_grad(set_to_none=True)
        if extra_optimizer is not None:
            extra_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if before_step is not None:
            before_step(step)
        opt.step()
        if extra_optimizer is not None:
            extra_optimizer.step()
        sched.step()
        if after_step is not None:
            after_step(step)
        acc += lv
        cnt += 1
        if cnt == chunk or step == steps - 1:
            losses.append(acc / cnt)
            acc, cnt = 0.0, 0
        if progress is not None:
            progress(step + 1, steps, lv)
    model.eval()
    return LoopResult(steps, losses)


def weight_layers(model: nn.Module, include_first: bool = True, include_last: bool = True) -> dict[str, nn.Module]:
    """The conv / linear layers whose ``weight`` is a trainable parameter, by name (model order)."""
    out = {n: m for n, m in model.named_modules()
           if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)) and isinstance(getattr(m, "weight", None), nn.Parameter)}
    names = list(out)
    if not include_first and names:
        out.pop(names[0])
    if not include_last and len(names) > 1:
        out.pop(names[-1])
    return out


def reinitialise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Fresh random weights (each module's own ``reset_parameters``; BN statistics reset)."""
    torch.manual_seed(seed)
    for m in model.modules():
        if hasattr(m, "reset_parameters") and m is not model:
            m.reset_parameters()
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
    return model


def sparsity_of(masks: dict[str, torch.Tensor]) -> float:
    """Fraction of zeros over all masks."""
    total = sum(m.numel() for m in masks.values())
    kept = sum(int(m.sum()) for m in masks.values())
    return 1.0 - kept / max(total, 1)


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Zero the masked-out weights in place."""
    mods = dict(model.named_modules())
    with torch.no_grad():
        for name, mask in masks.items():
            mods[name].weight.mul_(mask.to(mods[name].weight.dtype))


UNSTRUCTURED_NOTE = ("unstructured sparsity: the zeros change stored bytes, not latency on dense engines "
                     "(ONNX Runtime, TensorRT, TVM and VTA run the same dense kernels); only a target with a "
                     "sparse kernel turns it into speed")


def top1(model: nn.Module, test: ImageSet, limit: int | None = None, seed: int = 0) -> float:
    """Top-1 (%) on ``test``, or on a fixed random subset of ``limit`` images (not the first ones: some
    splits, the embedded demo among them, are ordered by class)."""
    from edgeprune.metrics import evaluate

    if limit is not None and limit < len(test):
        pick = np.sort(np.random.default_rng(seed).permutation(len(test))[:limit])
        test = test.subset(pick)
    return evaluate(model, test)
