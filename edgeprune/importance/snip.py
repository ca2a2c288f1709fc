"""SNIP connection sensitivity, aggregated per channel (Lee et al. 2019)."""
from __future__ import annotations

import torch
from torch import nn

from edgeprune.graph import ChannelGraph
from edgeprune.importance.base import Scores, check_finite_grad, checked_loss, criterion, per_group


@criterion("snip", "connection sensitivity |g*w| summed over every parameter the channel owns (model as given)",
           needs_data=True, needs_grad=True, combine="sum",
           paper="Lee et al. 2019, SNIP: Single-shot Network Pruning based on Connection Sensitivity (ICLR)")
def snip(model: nn.Module, graph: ChannelGraph, batches: list, **options) -> Scores:
    """``sum |dL/dw * w|`` over the channel's parameters in all of its group's layers (combine: sum).

    SNIP scores connections at initialisation; here it runs on the model as
    given (trained), with the gradient of the loss averaged over the batches.
    """
    model = model.eval()
    model.zero_grad(set_to_none=True)
    for x, y in batches:
        (checked_loss(model, x, y, where="snip") / len(batches)).backward()

    def sens(mod: nn.Module, name: str) -> torch.Tensor | None:
        p = getattr(mod, name, None)
        if not isinstance(p, torch.Tensor) or p.grad is None:
            return None
        check_finite_grad(p.grad, "snip")
        return (p.detach() * p.grad).abs()

    out = per_group(graph, model, sens, "sum")
    model.zero_grad(set_to_none=True)
    return out
