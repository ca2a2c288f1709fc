"""BatchNorm criteria: network slimming's |gamma| and the data-free BN-statistics score."""
from __future__ import annotations

import math

import torch
from torch import nn

from edgeprune.graph import ChannelGraph
from edgeprune.importance.base import Scores, criterion
from edgeprune.importance.norms import l2


def group_bns(model: nn.Module, graph: ChannelGraph) -> dict[str, list[nn.modules.batchnorm._BatchNorm]]:
    """The BatchNorm layers whose channels are each group (affine ones only)."""
    modules = dict(model.named_modules())
    out: dict[str, list] = {}
    for g in graph.prunable:
        out[g.id] = [modules[m.layer] for m in g.members
                     if m.dim == "out" and m.kind == "bn" and m.layer in modules
                     and getattr(modules[m.layer], "weight", None) is not None and modules[m.layer].num_features == g.size]
    return out


@criterion("bn-scale", "|gamma| of the group's BatchNorm layers (summed); L2 filter norm for groups without BN",
           needs_data=False, needs_grad=False, combine="sum",
           paper="Liu et al. 2017, Learning Efficient Convolutional Networks through Network Slimming (ICCV)")
def bn_scale(model: nn.Module, graph: ChannelGraph, batches: list | None, **options) -> Scores:
    """Network slimming: a channel's importance is its BN scale |gamma|, summed over the group's BNs.

    Groups with no BN fall back to the L2 norm of their producers' filters.
    The L1 penalty on gamma that makes this criterion sharp belongs to training
    (the recovery step's option), not to scoring.
    """
    bns = group_bns(model, graph)
    fallback = None
    out: Scores = {}
    for g in graph.prunable:
        if bns[g.id]:
            out[g.id] = sum(b.weight.detach().abs().double() for b in bns[g.id]).float()
        else:
            fallback = fallback or l2(model, graph, None)
            out[g.id] = fallback[g.id]
    return out


def expected_relu(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """E[max(0, z)] for z ~ N(mu, sigma^2), elementwise."""
    sigma = sigma.clamp_min(1e-12)
    t = mu / sigma
    cdf = 0.5 * (1 + torch.erf(t / math.sqrt(2)))
    pdf = torch.exp(-0.5 * t**2) / math.sqrt(2 * math.pi)
    return mu * cdf + sigma * pdf


@criterion("bn-stats", "data-free: expected post-ReLU activation from BN gamma/beta (BN output ~ N(beta, gamma^2))",
           needs_data=False, needs_grad=False, combine="sum",
           paper="Oh et al. 2022, Batch Normalization Tells You Which Filter is Important (WACV)")
def bn_stats(model: nn.Module, graph: ChannelGraph, batches: list | None, **options) -> Scores:
    """The BN output of channel c is about N(beta_c, gamma_c^2) (the input is normalised by the running
    mean and variance), so the expected activation after ReLU is
    ``beta * Phi(beta/|gamma|) + |gamma| * phi(beta/|gamma|)``: a channel that is almost always off, or
    carries almost nothing, scores low. Summed over the group's BNs; groups without BN fall back to
    the producers' L2 filter norm. Uses no data: the running statistics are the data's summary.
    """
    bns = group_bns(model, graph)
    fallback = None
    out: Scores = {}
    for g in graph.prunable:
        if bns[g.id]:
            vals = [expected_relu(b.bias.detach().double() if b.bias is not None else torch.zeros(g.size, dtype=torch.float64),
                                  b.weight.detach().abs().double()) for b in bns[g.id]]
            out[g.id] = sum(vals).float()
        else:
            fallback = fallback or l2(model, graph, None)
            out[g.id] = fallback[g.id]
    return out
