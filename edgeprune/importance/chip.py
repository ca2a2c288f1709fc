"""CHIP: channel independence from the nuclear norm of feature maps (Sui et al. 2021)."""
from __future__ import annotations

import torch
from torch import nn

from edgeprune.graph import ChannelGraph, Member
from edgeprune.importance.base import Scores, consumer_inputs, criterion


def channel_independence(maps: torch.Tensor) -> torch.Tensor:
    """(B, C, positions) -> (C,): mean over images of ||A||_* - ||A without row c||_*."""
    c = maps.shape[1]
    gram = maps @ maps.transpose(1, 2)  # (B, C, C): singular values of A are sqrt(eig(A A^T))
    full = torch.linalg.eigvalsh(gram).clamp_min(0).sqrt().sum(-1)  # (B,)
    idx = torch.arange(c)
    keep = torch.stack([idx[idx != ch] for ch in range(c)])  # (C, C-1)
    sub = gram[:, keep[:, :, None], keep[:, None, :]]  # (B, C, C-1, C-1)
    rest = torch.linalg.eigvalsh(sub).clamp_min(0).sqrt().sum(-1)  # (B, C)
    return (full[:, None] - rest).mean(0)


@criterion("chip", "channel independence: drop in the nuclear norm of the feature maps when the channel is removed",
           needs_data=True, needs_grad=False, combine="mean",
           paper="Sui et al. 2021, CHIP: CHannel Independence-based Pruning for Compact Neural Networks (NeurIPS)")
def chip(model: nn.Module, graph: ChannelGraph, batches: list, images: int = 32, **options) -> Scores:
    """Per image, the feature maps of a group's channels form a C x HW matrix A (where a consumer reads
    them, after ReLU); channel c's independence is ``||A||_* - ||A with row c removed||_*``, averaged
    over ``images`` images and over the group's consumers (combine: mean). A channel that is a copy
    or a combination of others, or is zero, scores low.
    """
    acc: dict[str, torch.Tensor] = {g.id: torch.zeros(g.size, dtype=torch.float64) for g in graph.prunable}
    cnt: dict[str, int] = {g.id: 0 for g in graph.prunable}
    seen: dict[tuple[str, str], int] = {}

    def fn(gid: str, mem: Member, mod: nn.Module, v: torch.Tensor) -> None:
        key = (gid, mem.layer)
        have = seen.get(key, 0)
        take = min(v.shape[0], images - have)
        if take <= 0:
            return
        seen[key] = have + take
        acc[gid] += channel_independence(v[:take].double()) * take
        cnt[gid] += take

    consumer_inputs(model, graph, batches, fn)
    return {g.id: (acc[g.id] / cnt[g.id]).float() if cnt[g.id] else torch.zeros(g.size) for g in graph.prunable}
