"""Filter-norm criteria (Li et al. 2017): data-free, from the producers' weights."""
from __future__ import annotations

import torch
from torch import nn

from edgeprune.graph import ChannelGraph
from edgeprune.importance.base import Scores, criterion

_PAPER = "Li et al. 2017, Pruning Filters for Efficient ConvNets (ICLR)"


def producer_filters(model: nn.Module, graph: ChannelGraph) -> dict[str, list[torch.Tensor]]:
    """Per group, each learned producer's weight as (channels, fan-in) (the fixed option-A selection is skipped)."""
    modules = dict(model.named_modules())
    out: dict[str, list[torch.Tensor]] = {}
    for g in graph.prunable:
        mats = []
        for mem in g.members:
            mod = modules.get(mem.layer)
            if mem.dim != "out" or mem.kind not in ("conv2d", "linear") or mod is None:
                continue
            w = getattr(mod, "weight", None)
            if isinstance(w, nn.Parameter) and w.shape[0] == g.size:
                mats.append(w.detach().flatten(1).double())
        out[g.id] = mats
    return out


@criterion("l1", "L1 norm of the channel's filters in the group's producers (summed over producers)", needs_data=False,
           needs_grad=False, combine="sum", paper=_PAPER)
def l1(model: nn.Module, graph: ChannelGraph, batches: list | None, **options) -> Scores:
    """Sum of |w| over the channel's output filters in every conv/linear producer of the group (combine: sum)."""
    filt = producer_filters(model, graph)
    return {g.id: (sum(m.abs().sum(1) for m in filt[g.id]) if filt[g.id] else torch.zeros(g.size)).float()
            for g in graph.prunable}


@criterion("l2", "L2 norm of the channel's filters in the group's producers (norm of all of them together)", needs_data=False,
           needs_grad=False, combine="sum", paper=_PAPER)
def l2(model: nn.Module, graph: ChannelGraph, batches: list | None, **options) -> Scores:
    """sqrt(sum of w^2) over the channel's filters in every producer (combine: squares summed, then sqrt)."""
    filt = producer_filters(model, graph)
    return {g.id: (sum((m**2).sum(1) for m in filt[g.id]).sqrt() if filt[g.id] else torch.zeros(g.size)).float()
            for g in graph.prunable}
