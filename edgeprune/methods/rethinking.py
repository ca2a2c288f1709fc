"""The "rethinking the value of network pruning" baseline: scratch training vs fine-tuning a pruned architecture.

Paper: Liu, Sun, Zhou, Huang & Darrell 2019, *Rethinking the Value of Network
Pruning* (ICLR). Its observation: for structured pruning with a predefined
target architecture, training the pruned architecture from random weights
for a full schedule ("Scratch-E": the same epochs as the large model;
"Scratch-B": the same computation) matches or beats fine-tuning the
inherited weights, so the architecture, not the weights, carries the value.

When to use it: as a control when judging a pruning method -- if the pruned
network trained from scratch with the same budget does as well, the
importance criterion only chose an architecture. Expect fine-tuning to win
at short budgets (the regime of edge deployment: a few epochs; ResNet-20,
half the channels, 60 steps: 33.1% vs 27.6%), and scratch training to catch
up only with a budget comparable to the original training;
:func:`scratch_vs_finetune` measures both at the budget you give.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from edgeprune.errors import BadInput
from edgeprune.methods._train import reinitialise, sgd_loop, test_split


def prune_channels(model: nn.Module, data: Any, ratio: float = 0.5, criterion: str = "l1", example: Any = None,
                   batches: int = 4) -> tuple[nn.Module, dict[str, list[int]]]:
    """Structured pruning with a uniform keep ``ratio`` per prunable group by ``criterion``: (pruned model, keep)."""
    from edgeprune.graph import channel_groups
    from edgeprune.importance import importance
    from edgeprune.methods._train import train_split
    from edgeprune.prune import prune

    if not 0.0 < ratio <= 1.0:
        raise BadInput(f"keep ratio must be in (0, 1], got {ratio}")
    if example is None:
        example = train_split(data).example(1) if data is not None else None
    graph = channel_groups(model, example)
    scores = importance(model, train_split(data) if data is not None else None, criterion, graph=graph, batches=batches)
    keep = {}
    for g in graph.prunable:
        if g.unit != 1:
            continue
        k = max(1, round(ratio * g.size))
        keep[g.id] = sorted(torch.argsort(scores[g.id], descending=True)[:k].tolist())
    return prune(model, keep, graph=graph), keep


def scratch_vs_finetune(model: nn.Module, data: Any, keep: float | Mapping[str, Sequence[int]] = 0.5, *,
                        finetune_steps: int = 200, scratch_steps: int | None = None, criterion: str = "l1",
                        finetune_lr: float = 0.01, scratch_lr: float = 0.05, batch_size: int = 64,
                        max_images: int | None = None, eval_limit: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Prune ``model`` structurally, then (a) fine-tune the inherited weights and (b) train the same
    architecture from random weights; return both top-1 accuracies.

    ``keep``: a uniform keep ratio (channels ranked by ``criterion``) or an explicit
    ``{group: kept indices}``. ``scratch_steps`` defaults to ``finetune_steps``
    (the same budget; pass a multiple for Liu et al.'s longer Scratch-B).
    Scratch training uses a larger learning rate (``scratch_lr``), as training
    from random weights needs. The input model is not modified.
    """
    from edgeprune.methods._train import top1
    from edgeprune.metrics import count_params
    from edgeprune.prune import prune

    test = test_split(data)
    if isinstance(keep, Mapping):
        pruned, _kept = prune(model, keep, test.example(1)), dict(keep)
    else:
        pruned, _kept = prune_channels(model, data, float(keep), criterion)
    scratch_steps = finetune_steps if scratch_steps is None else scratch_steps
    out: dict[str, Any] = {"dense_top1": top1(model, test, eval_limit), "params_dense": count_params(model),
                           "params_pruned": count_params(pruned)}
    out["pruned_top1_before"] = top1(pruned, test, eval_limit)
    ft = copy.deepcopy(pruned)
    sgd_loop(ft, data, finetune_steps, lr=finetune_lr, batch_size=batch_size, max_images=max_images, seed=seed)
    out["finetune_top1"] = top1(ft, test, eval_limit)
    scratch = reinitialise(copy.deepcopy(pruned), seed)
    sgd_loop(scratch, data, scratch_steps, lr=scratch_lr, batch_size=batch_size, max_images=max_images, seed=seed)
    out["scratch_top1"] = top1(scratch, test, eval_limit)
    out.update({"finetune_steps": finetune_steps, "scratch_steps": scratch_steps, "batch_size": batch_size,
                "criterion": criterion if not isinstance(keep, Mapping) else "given",
                "keep": keep if not isinstance(keep, Mapping) else "given",
                "winner": "finetune" if out["finetune_top1"] >= out["scratch_top1"] else "scratch"})
    return out


__all__ = ["prune_channels", "scratch_vs_finetune"]
