"""Gradient-based Taylor criteria (Molchanov et al. 2017, 2019)."""
from __future__ import annotations

import torch
from torch import nn

from edgeprune.importance.base import Scores, criterion, forward_loss, member_channel_sum, group_members
from edgeprune.graph.groups import ChannelGraph


@criterion(
    "taylor",
    "first-order Taylor on weights, per group: (sum of g*w over the group's parameters)^2, summed over batches",
    needs_data=True,
    needs_grad=True,
    combine="sum",
    paper="Molchanov et al. 2019, Importance Estimation for Neural Network Pruning",
)
def taylor_weight(model: nn.Module, graph: ChannelGraph, batches: list, **options) -> Scores:
    """Group Taylor: the squared first-order estimate of the loss change when a whole channel group is removed.

    Per batch, each channel's estimate is the sum of ``g * w`` over every
    parameter the channel owns in every layer of its group (conv filters, BN
    scale and shift, consumer input slices); the square is accumulated over
    batches (Molchanov et al. 2019, eq. 8 applied to coupled groups).
    """
    model = model.eval()
    modules = dict(model.named_modules())
    acc: Scores = {g.id: torch.zeros(g.size, dtype=torch.float64) for g in graph.prunable}

    def gw(mod: nn.Module, name: str) -> torch.Tensor | None:
        p = getattr(mod, name, None)
        if not isinstance(p, torch.Tensor) or p.grad is None:
            return None
        return p.detach() * p.grad

    for x, y in batches:
        model.zero_grad(set_to_none=True)
        forward_loss(model, x, y).backward()
        for g in graph.prunable:
            total = torch.zeros(g.size, dtype=torch.float64)
            for mod, mem in group_members(graph, modules, g):
                v = member_channel_sum(mod, mem, gw)
                if v is not None and v.numel() == g.size:
                    total += v.double()
            acc[g.id] += total**2
    model.zero_grad(set_to_none=True)
    return {k: v.float() for k, v in acc.items()}
