"""The random baseline."""
from __future__ import annotations

import torch
from torch import nn

from edgeprune.graph import ChannelGraph
from edgeprune.importance.base import Scores, criterion


@criterion("random", "uniform random scores (seeded): the baseline every criterion must beat", needs_data=False,
           needs_grad=False, combine="sum", paper="Liu et al. 2019, Rethinking the Value of Network Pruning (ICLR)")
def random_scores(model: nn.Module, graph: ChannelGraph, batches: list | None, seed: int = 0, **options) -> Scores:
    """One U(0, 1) draw per channel from a generator seeded with ``seed`` (same seed, same scores)."""
    gen = torch.Generator().manual_seed(int(seed))
    return {g.id: torch.rand(g.size, generator=gen) for g in graph.prunable}
