"""Network slimming: L1 on BatchNorm scales during training, then remove the channels whose scale vanished.

Paper: Liu, Li, Shen, Huang, Yan & Zhang 2017, *Learning Efficient
Convolutional Networks through Network Slimming* (ICCV). Training adds
``lambda * sum |gamma|`` over every BN scale (a subgradient step), which drives
the scales of unneeded channels towards zero; one global threshold on
``|gamma|`` (the ``ratio`` quantile over all prunable channels) then picks the
channels to remove, which are removed for real (:func:`edgeprune.prune.prune`)
and the thin network is fine-tuned.

When to use it: networks with BatchNorm after every conv and a fine-tuning
budget; training itself chooses how many channels each layer keeps (no
per-layer sensitivity analysis). The result is a dense, thinner network, so
it speeds up every engine. Under a latency budget, use the ``bn-scale``
criterion with the planner instead of a fixed ratio (``edgeprune compress
--criterion bn-scale``) after the L1 training here.

Channels coupled by residual adds form one group (several BNs); by default
those groups stay whole, as in the paper's ResNet experiments (which prune
inside the blocks only); with ``include_coupled`` their score is the mean
``|gamma|`` over the group's BNs.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from edgeprune.errors import BadInput
from edgeprune.methods._train import test_split, train_split
from edgeprune.ui import QUIET, UI


def bn_scales(model: nn.Module) -> torch.Tensor:
    """All BN scales |gamma| of the model, concatenated."""
    vals = [m.weight.detach().abs().flatten() for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None]
    return torch.cat(vals) if vals else torch.zeros(0)


def scale_stats(model: nn.Module, small: float = 0.05) -> dict[str, float]:
    """Mean and median |gamma|, and the share of scales below ``small`` x the largest."""
    s = bn_scales(model)
    if len(s) == 0:
        return {"mean": 0.0, "median": 0.0, "small_fraction": 0.0}
    return {"mean": float(s.mean()), "median": float(s.median()),
            "small_fraction": float((s < small * s.max()).float().mean())}


def sparsity_train(model: nn.Module, data: Any, l1: float = 1e-4, epochs: float = 1.0, lr: float = 0.01,
                   batch_size: int = 64, max_images: int | None = None, seed: int = 0, ui: UI = QUIET) -> nn.Module:
    """Train ``model`` in place with the L1 penalty on BN scales (``edgeprune.recover`` with ``bn_l1``)."""
    from edgeprune.recover import RecoverConfig, recover

    if l1 < 0:
        raise BadInput(f"l1 must be >= 0, got {l1}")
    cfg = RecoverConfig(epochs=epochs, lr=lr, batch_size=batch_size, max_images=max_images, seed=seed, bn_l1=l1,
                        bn_recalibrate=False, kd_alpha=0.0)
    return recover(model, data, None, config=cfg, ui=ui).model


def slim_keep(model: nn.Module, ratio: float, example: Any, min_keep: float = 0.1,
              multiple: int = 1, include_coupled: bool = False) -> tuple[dict[str, list[int]], float, Any]:
    """Kept channels per group for a global |gamma| threshold removing ``ratio`` of the eligible channels.

    Every group keeps at least ``ceil(min_keep * size)`` channels (and a multiple of
    ``multiple`` when given). Groups coupled through residual adds (more than one
    BN) stay whole unless ``include_coupled``: as in the paper's ResNet experiments,
    which prune only inside the blocks -- one threshold over the residual stream's
    mean |gamma| (measured on ResNet-20) cuts it to a few channels. Returns (keep, threshold, graph).
    """
    from edgeprune.graph import channel_groups
    from edgeprune.importance.bn import group_bns

    if not 0.0 <= ratio < 1.0:
        raise BadInput(f"prune ratio must be in [0, 1), got {ratio}")
    graph = channel_groups(model, example)
    bns = group_bns(model, graph)
    scores = {g.id: torch.stack([b.weight.detach().abs() for b in bns[g.id]]).mean(0)
              for g in graph.prunable if g.unit == 1 and bns.get(g.id) and (include_coupled or len(bns[g.id]) == 1)}
    if not scores:
        raise BadInput("no prunable channel group has a BatchNorm: network slimming needs BN after the convs")
    allv = torch.cat(list(scores.values()))
    k = math.floor(ratio * len(allv))
    threshold = float(torch.sort(allv).values[k - 1]) if k > 0 else -1.0
    keep: dict[str, list[int]] = {}
    for gid, s in scores.items():
        size = len(s)
        n = int((s > threshold).sum())
        n = max(n, math.ceil(min_keep * size), 1)
        if multiple > 1:
            n = min(size, math.ceil(n / multiple) * multiple)
        keep[gid] = sorted(torch.argsort(s, descending=True, stable=True)[:n].tolist())
    return keep, threshold, graph


@dataclass
class SlimResult:
    """What slimming did: the thin model, threshold, kept channels, BN-scale statistics and top-1 along the way."""

    model: nn.Module
    threshold: float
    kept: dict[str, tuple[int, int]]  # group -> (kept, size)
    scales_before: dict[str, float]
    scales_after: dict[str, float]
    params: tuple[int, int]
    macs: tuple[int, int]
    accuracy: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly (no model)."""
        return {"method": "slimming", "threshold": self.threshold, "kept": self.kept, "scales_before": self.scales_before,
                "scales_after": self.scales_after, "params": list(self.params), "macs": list(self.macs),
                "accuracy": self.accuracy}


def slim(model: nn.Module, data: Any, l1: float = 1e-4, epochs: float = 1.0, prune_ratio: float = 0.4,
         finetune_epochs: float = 0.5, lr: float = 0.01, batch_size: int = 64, max_images: int | None = None,
         min_keep: float = 0.1, multiple: int = 1, include_coupled: bool = False, eval_limit: int | None = None,
         seed: int = 0, ui: UI = QUIET) -> SlimResult:
    """Network slimming end to end: L1 sparsity training, global BN-scale pruning, fine-tuning.

    The input model is not modified. ``prune_ratio``: share of the prunable channels
    removed; top-1 is reported on the test split (first ``eval_limit`` images)
    before, after sparsity training, after pruning and after fine-tuning. Residual-coupled
    groups stay whole unless ``include_coupled`` (see :func:`slim_keep`).
    """
    from edgeprune.methods._train import top1
    from edgeprune.metrics import count_macs, count_params
    from edgeprune.prune import prune
    from edgeprune.recover import RecoverConfig, recover

    model = copy.deepcopy(model)
    test = test_split(data)
    example = train_split(data).example(1)
    acc = {"dense": top1(model, test, eval_limit)}
    before = scale_stats(model)
    if epochs > 0:
        sparsity_train(model, data, l1, epochs, lr, batch_size, max_images, seed, ui)
        acc["l1_trained"] = top1(model, test, eval_limit)
    after = scale_stats(model)
    keep, thr, graph = slim_keep(model, prune_ratio, example, min_keep, multiple, include_coupled)
    small = prune(model, keep, graph=graph)
    acc["pruned"] = top1(small, test, eval_limit)
    if finetune_epochs > 0:
        cfg = RecoverConfig(epochs=finetune_epochs, lr=lr, batch_size=batch_size, max_images=max_images, seed=seed,
                            kd_alpha=0.0)
        small = recover(small, data, None, config=cfg, ui=ui).model
        acc["finetuned"] = top1(small, test, eval_limit)
    sizes = {g.id: g.size for g in graph.groups}
    return SlimResult(small, thr, {gid: (len(v), sizes[gid]) for gid, v in keep.items()}, before, after,
                      (count_params(model), count_params(small)), (count_macs(model, example), count_macs(small, example)), acc)


__all__ = ["SlimResult", "bn_scales", "scale_stats", "slim", "slim_keep", "sparsity_train"]
