"""Gradient-matrix redundancy: how much of a layer's per-sample gradient matrix is explained by fewer channels.

After the gradient-matrix analysis of network redundancy in the literature
(literature/abstracts.txt: estimating the maximum compression rate of each
layer from its gradient matrix). The per-sample gradient matrix of a group is
``Z[n, c] = d loss_n / d m_c`` (one column per channel, from per-sample masks
on the group's output points, one backward per batch).
"""
from __future__ import annotations

import torch
from torch import nn

from edgeprune.graph import ChannelGraph
from edgeprune.importance.base import Scores, criterion, group_sum, mask_gradients


def effective_rank(z: torch.Tensor, energy: float = 0.99) -> float:
    """Smallest number of singular directions holding ``energy`` of the squared Frobenius norm of ``z``."""
    s = torch.linalg.svdvals(z.double())
    tot = float((s**2).sum())
    if tot <= 0:
        return 0.0
    cum = torch.cumsum(s**2, 0) / tot
    return float(int(torch.searchsorted(cum, torch.tensor(energy, dtype=cum.dtype))) + 1)


def redundancy(z: torch.Tensor, energy: float = 0.99) -> float:
    """1 - effective rank / channels: the share of a layer's channels its gradients do not need."""
    c = z.shape[1]
    return 1.0 - min(c, effective_rank(z, energy)) / c if c else 0.0


def unique_energy(z: torch.Tensor, ridge: float = 1e-6) -> torch.Tensor:
    """Per column c: mean squared residual of column c regressed on the other columns.

    ``1 / [(Z^T Z / N + lambda I)^-1]_cc``: the gradient signal only channel c
    carries. A zero or duplicated channel scores (about) zero.
    """
    n, c = z.shape
    g = z.T.double() @ z.double() / max(1, n)
    lam = ridge * (float(torch.diagonal(g).mean()) + 1e-30)
    inv = torch.linalg.inv(g + lam * torch.eye(c, dtype=g.dtype))
    return (1.0 / torch.diagonal(inv)).clamp_min(0) - lam


@criterion("gradient-redundancy", "per channel: gradient energy not explained by the other channels of the group (per-sample gradient matrix)",
           needs_data=True, needs_grad=True, combine="sum",
           paper="gradient-matrix analysis of maximum network redundancy (literature/abstracts.txt)")
def gradient_redundancy(model: nn.Module, graph: ChannelGraph, batches: list, ridge: float = 1e-6, **options) -> Scores:
    """The unique gradient energy of each channel in its group's per-sample gradient matrix ``Z`` (N x C):
    the residual of column c after least-squares regression on the other columns. Channels whose
    gradients are redundant (explained by the others) or absent score low. A group's output points are
    summed into one column per channel (combine: sum). Per-layer redundancy for allocation:
    :func:`layer_redundancy` / ``layer_sensitivity(kind="gradient-redundancy")``.
    """
    points, z, _ = mask_gradients(model, graph, batches, where="gradient-redundancy")
    per_group = group_sum(points, z, graph)
    return {g.id: unique_energy(per_group[g.id], ridge).float() if per_group.get(g.id) is not None else torch.zeros(g.size)
            for g in graph.prunable}


def layer_redundancy(model: nn.Module, graph: ChannelGraph, batches: list, energy: float = 0.99) -> dict[str, float]:
    """{producer layer: 1 - effective rank of its per-sample gradient matrix / its channels}."""
    points, z, _ = mask_gradients(model, graph, batches, where="gradient-redundancy")
    out: dict[str, float] = {}
    for i, p in enumerate(points):
        if p.kind == "select":
            continue
        out[p.producer] = redundancy(z[i], energy)
    return out
