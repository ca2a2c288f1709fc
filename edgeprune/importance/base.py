"""The importance registry and the shared plumbing (per-member channel reductions, group combination)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn

from edgeprune.graph.groups import ChannelGraph, ChannelGroup, Member
from edgeprune.registry import Registry

Scores = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Criterion:
    """An importance criterion: ``fn(model, graph, batches, **options) -> {group_id: scores}``."""

    fn: Callable[..., Scores]
    needs_data: bool
    needs_grad: bool
    combine: str  # how scores of a group's layers are combined: sum | mean | max
    paper: str = ""


CRITERIA: Registry[Criterion] = Registry("importance criterion")


def criterion(name: str, description: str, needs_data: bool, needs_grad: bool, combine: str = "sum", paper: str = ""):
    """Register ``fn`` as an importance criterion."""

    def deco(fn: Callable[..., Scores]) -> Callable[..., Scores]:
        CRITERIA.register(name, description)(Criterion(fn, needs_data, needs_grad, combine, paper))
        return fn

    return deco


def member_channel_sum(module: nn.Module, member: Member, tensor_of: Callable[[nn.Module, str], torch.Tensor | None]) -> torch.Tensor | None:
    """Reduce a per-parameter tensor of ``module`` to one value per channel along the member's dim.

    ``tensor_of(module, param_name)`` returns the per-parameter quantity (for
    example ``w * grad``) or None. Conv/linear weights reduce over every axis but
    the output (dim "out") or input (dim "in") axis; BN/LN reduce weight and bias.
    """
    out = None
    if member.kind in ("conv2d", "linear"):
        t = tensor_of(module, "weight")
        if t is None:
            return None
        if member.dim == "out":
            out = t.flatten(1).sum(1)
            b = tensor_of(module, "bias") if getattr(module, "bias", None) is not None else None
            if b is not None:
                out = out + b
        else:
            groups = getattr(module, "groups", 1)
            if groups > 1 and groups == getattr(module, "in_channels", 0):
                out = t.flatten(1).sum(1)  # depthwise: in == out channel
            else:
                out = t.transpose(0, 1).flatten(1).sum(1)
    elif member.kind in ("bn", "layernorm", "groupnorm") and member.dim == "out":
        parts = [tensor_of(module, p) for p in ("weight", "bias") if getattr(module, p, None) is not None]
        parts = [p for p in parts if p is not None]
        out = sum(parts) if parts else None
    return out


def combine(values: Iterable[torch.Tensor], how: str) -> torch.Tensor:
    """Combine per-member channel scores of one group."""
    vals = [v.double() for v in values]
    stacked = torch.stack(vals)
    if how == "sum":
        return stacked.sum(0)
    if how == "mean":
        return stacked.mean(0)
    if how == "max":
        return stacked.max(0).values
    raise ValueError(f"unknown combination {how!r}")


def group_members(graph: ChannelGraph, modules: Mapping[str, nn.Module], group: ChannelGroup) -> list[tuple[nn.Module, Member]]:
    """(module, member) pairs of a group whose module sizes match the group (skips concat slices)."""
    out = []
    for mem in group.members:
        mod = modules.get(mem.layer)
        if mod is None:
            continue
        out.append((mod, mem))
    return out


def _fit(v: torch.Tensor, size: int) -> torch.Tensor | None:
    return v if v.numel() == size else None


def per_group(graph: ChannelGraph, model: nn.Module, tensor_of: Callable[[nn.Module, str], torch.Tensor | None], how: str = "sum") -> Scores:
    """Scores for every prunable group from a per-parameter tensor function."""
    modules = dict(model.named_modules())
    scores: Scores = {}
    for g in graph.prunable:
        vals = []
        for mod, mem in group_members(graph, modules, g):
            v = member_channel_sum(mod, mem, tensor_of)
            if v is not None:
                v = _fit(v.detach(), g.size)
                if v is not None:
                    vals.append(v)
        scores[g.id] = combine(vals, how).float() if vals else torch.zeros(g.size)
    return scores


def forward_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``model`` on a batch."""
    return nn.functional.cross_entropy(model(x), y)


def run_criterion(name: str, model: nn.Module, graph: ChannelGraph, batches: list[tuple[torch.Tensor, torch.Tensor]] | None, **options: Any) -> Scores:
    """Run a registered criterion and check its output (one finite score per channel of each prunable group)."""
    from edgeprune.errors import BadInput

    crit = CRITERIA.get(name)
    if crit.needs_data and not batches:
        raise BadInput(f"importance criterion {name!r} needs data (pass --data)")
    scores = crit.fn(model, graph, batches, **options)
    for g in graph.prunable:
        s = scores.get(g.id)
        if s is None or s.shape != (g.size,):
            raise RuntimeError(f"criterion {name} returned a wrong shape for group {g.id}")
        if not torch.isfinite(s).all():
            raise BadInput(f"criterion {name}: non-finite scores in group {g.id} (NaN/inf gradients? check the data and the model)")
    return scores
