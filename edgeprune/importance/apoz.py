"""APoZ: average percentage of zeros after ReLU (Hu et al. 2016)."""
from __future__ import annotations

import torch
from torch import nn

from edgeprune.graph import ChannelGraph, Member
from edgeprune.importance.base import Scores, consumer_inputs, criterion


@criterion("apoz", "1 - average percentage of zeros of the channel in its consumers' inputs (after ReLU)",
           needs_data=True, needs_grad=False, combine="mean",
           paper="Hu et al. 2016, Network Trimming: A Data-Driven Neuron Pruning Approach towards Efficient Deep Architectures")
def apoz(model: nn.Module, graph: ChannelGraph, batches: list, eps: float = 0.0, **options) -> Scores:
    """Fraction of non-zero activations of the channel where its consumers read it (post-ReLU maps).

    Higher APoZ means less important, so the score is ``1 - APoZ``, averaged
    over the group's consumers (combine: mean). Values with ``|a| <= eps``
    count as zero.
    """
    zeros: dict[str, torch.Tensor] = {g.id: torch.zeros(g.size, dtype=torch.float64) for g in graph.prunable}
    count: dict[str, float] = {g.id: 0.0 for g in graph.prunable}

    def fn(gid: str, mem: Member, mod: nn.Module, v: torch.Tensor) -> None:
        zeros[gid] += (v.abs() <= eps).double().mean(2).sum(0)
        count[gid] += v.shape[0]

    consumer_inputs(model, graph, batches, fn)
    return {g.id: (1.0 - zeros[g.id] / count[g.id]).float() if count[g.id] else torch.zeros(g.size) for g in graph.prunable}
