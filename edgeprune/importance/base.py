"""The importance registry and the shared plumbing (per-member channel reductions, group combination)."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from edgeprune.graph import ChannelGraph, ChannelGroup, Member
from edgeprune.graph.model import channel_kinds
from edgeprune.registry import Registry

if TYPE_CHECKING:
    from typing import Self

Scores = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Criterion:
    """An importance criterion: ``fn(model, graph, batches, **options) -> {group_id: scores}``."""

    fn: Callable[..., Scores]
    needs_data: bool
    needs_grad: bool
    combine: str  # how scores of a group's layers are combined: sum | mean | max
    paper: str = ""
    signed: bool = False  # scores estimate a signed loss change: below zero = removal is expected to help


CRITERIA: Registry[Criterion] = Registry("importance criterion")


def criterion(name: str, description: str, needs_data: bool, needs_grad: bool, combine: str = "sum", paper: str = "",
              signed: bool = False):
    """Register ``fn`` as an importance criterion."""

    def deco(fn: Callable[..., Scores]) -> Callable[..., Scores]:
        CRITERIA.register(name, description)(Criterion(fn, needs_data, needs_grad, combine, paper, signed))
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


# --------------------------------------------------------------------------- masks on channel outputs
#
# Removing channel c of a group is exactly the same as multiplying every
# "output point" of the group by a mask m_c = 0: the output of each producer
# (after its BN when a BN of the group follows it directly; the fixed option-A
# selection counts as a producer). The gradient criteria differentiate with
# respect to such masks at m = 1: dL/dm_c = sum over the group's output
# points and positions of activation * gradient (Molchanov et al. 2017), and
# removal is the step delta m_c = -1.


@dataclass(frozen=True)
class MaskPoint:
    """A module output that carries a group's channels (a producer, or the BN right after it)."""

    group: str
    module: str  # the module whose output is masked
    producer: str  # the conv/linear/select layer the channels come from
    kind: str


def mask_points(model: nn.Module, graph: ChannelGraph) -> list[MaskPoint]:
    """The output points of every prunable group, found with one probe forward on the graph's example input."""
    modules = dict(model.named_modules())
    outputs: dict[str, Any] = {}
    bn_inputs: dict[str, Any] = {}
    hooks = []
    wanted_prod: set[str] = set()
    wanted_bn: set[str] = set()
    for g in graph.prunable:
        for mem in g.members:
            if mem.dim != "out" or mem.layer not in modules:
                continue
            if mem.kind in channel_kinds():
                wanted_prod.add(mem.layer)
            elif mem.kind in ("bn", "layernorm", "groupnorm"):
                wanted_bn.add(mem.layer)
    for name in wanted_prod:
        hooks.append(modules[name].register_forward_hook(lambda m, i, o, name=name: outputs.__setitem__(name, o)))
    for name in wanted_bn:
        hooks.append(modules[name].register_forward_pre_hook(lambda m, i, name=name: bn_inputs.__setitem__(name, i[0] if i else None)))
    try:
        with torch.no_grad():
            _run(model, graph.example_inputs)
    finally:
        for h in hooks:
            h.remove()
    points: list[MaskPoint] = []
    for g in graph.prunable:
        mems = [m for m in g.members if m.dim == "out" and m.layer in modules]
        bns = [m.layer for m in mems if m.kind in ("bn", "layernorm", "groupnorm")]
        for mem in mems:
            if mem.kind not in channel_kinds():
                continue
            out = outputs.get(mem.layer)
            follower = next((b for b in bns if out is not None and bn_inputs.get(b) is out), None)
            points.append(MaskPoint(g.id, follower or mem.layer, mem.layer, mem.kind))
    return points


def _batch_len(x: Any) -> int:
    from edgeprune.data.batch import batch_len

    return batch_len(x)


def _run(model: nn.Module, example: Any) -> Any:
    if isinstance(example, (tuple, list)):
        return model(*example)
    if isinstance(example, dict):
        return model(**example)
    return model(example)


def _broadcast(mask: torch.Tensor, out: torch.Tensor, channel_last: bool) -> torch.Tensor:
    """``mask`` (C,) or (B, C) shaped to multiply ``out`` along its channel axis."""
    if channel_last:  # (B, ..., C): linear on sequences
        shape = [mask.shape[0] if mask.dim() == 2 else 1] + [1] * (out.dim() - 2) + [mask.shape[-1]]
    else:
        shape = [mask.shape[0] if mask.dim() == 2 else 1, mask.shape[-1]] + [1] * (out.dim() - 2)
    return mask.reshape(shape)


class Masker:
    """Multiplies each mask point's output by ``values[i]`` ((C,) or per-sample (B, C)) while active.

    ``values`` maps a point index to a tensor; points without a value pass unchanged.
    Set ``shapes`` is filled with each point's output shape on every forward.
    """

    def __init__(self, model: nn.Module, points: list[MaskPoint]) -> None:
        self.model = model
        self.points = points
        self.values: dict[int, torch.Tensor] = {}
        self.shapes: dict[int, tuple[int, ...]] = {}
        self.outputs: dict[int, torch.Tensor] = {}
        self.keep_outputs = False
        self._hooks: list[Any] = []

    def __enter__(self) -> Self:
        modules = dict(self.model.named_modules())
        for i, p in enumerate(self.points):
            mod = modules[p.module]
            chan_last = isinstance(modules[p.producer], nn.Linear)

            def hook(m: nn.Module, inp: Any, out: torch.Tensor, i: int = i, chan_last: bool = chan_last) -> torch.Tensor:
                cl = chan_last and out.dim() == 3
                self.shapes[i] = tuple(out.shape)
                if self.keep_outputs:
                    self.outputs[i] = out
                v = self.values.get(i)
                if v is None:
                    return out
                return out * _broadcast(v, out, cl)

            self._hooks.append(mod.register_forward_hook(hook))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()

    def spatial(self, i: int) -> int:
        """Positions per channel at point ``i`` (H*W for conv maps, 1 for vectors)."""
        shp = self.shapes.get(i, ())
        if len(shp) <= 2:
            return 1
        p = self.points[i]
        modules = dict(self.model.named_modules())
        if isinstance(modules[p.producer], nn.Linear) and len(shp) == 3:
            return int(shp[1])
        n = 1
        for s in shp[2:]:
            n *= int(s)
        return n


_LOSS_FN: ContextVar[Callable[[Any, Any], torch.Tensor] | None] = ContextVar("edgeprune_loss_fn", default=None)


@contextmanager
def using_loss(loss_fn: Callable[[Any, Any], torch.Tensor] | None) -> Iterator[None]:
    """Within the block, :func:`checked_loss` uses ``loss_fn(outputs, targets) -> scalar`` instead of
    cross-entropy (None: cross-entropy). Scoped to the current context, so criteria need no extra argument."""
    token = _LOSS_FN.set(loss_fn)
    try:
        yield
    finally:
        _LOSS_FN.reset(token)


def checked_loss(model: nn.Module, x: Any, y: Any, reduction: str = "mean", where: str = "") -> torch.Tensor:
    """The loss of ``model`` on a batch (cross-entropy, or the ``loss_fn`` of :func:`using_loss`); a clear
    BadInput when it is NaN/inf. ``x`` may be a tensor, a tuple or a dict of inputs. A user's loss is taken
    as a batch mean: ``reduction="sum"`` multiplies it by the batch size."""
    from edgeprune.data.batch import batch_len, call_model
    from edgeprune.errors import BadInput

    out = call_model(model, x)
    user = _LOSS_FN.get()
    if user is None:
        loss = nn.functional.cross_entropy(out, y, reduction=reduction)
    else:
        loss = user(out, y)
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
            raise BadInput(f"loss_fn must return a scalar tensor, got {type(loss).__name__}"
                           f"{' of shape ' + str(tuple(loss.shape)) if isinstance(loss, torch.Tensor) else ''}")
        if reduction == "sum":
            loss = loss * batch_len(x)
    if not torch.isfinite(loss).all():
        raise BadInput(f"importance{(' ' + where) if where else ''}: the loss is NaN/inf on this data (check the inputs and the model's weights)")
    return loss


def check_finite_grad(t: torch.Tensor | None, where: str) -> None:
    """BadInput if a gradient holds NaN/inf."""
    from edgeprune.errors import BadInput

    if t is not None and not torch.isfinite(t).all():
        raise BadInput(f"importance {where}: NaN/inf gradients (check the data and the model)")


def mask_gradients(model: nn.Module, graph: ChannelGraph, batches: list, points: list[MaskPoint] | None = None,
                   where: str = "") -> tuple[list[MaskPoint], dict[int, torch.Tensor], dict[int, int]]:
    """Per-sample mask gradients ``z[i][n, c] = d loss_n / d m_c`` at every mask point, and each point's positions.

    The model runs in eval mode, so samples do not interact (BN uses running
    statistics) and the gradient of the summed loss w.r.t. a per-sample mask is
    the per-sample gradient, at the cost of one backward per batch.
    """
    model.eval()
    points = points if points is not None else mask_points(model, graph)
    sizes = {g.id: g.size for g in graph.prunable}
    acc: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(points))}
    spatial: dict[int, int] = {}
    with Masker(model, points) as mk:
        for x, y in batches:
            masks = {i: torch.ones(_batch_len(x), sizes[p.group], requires_grad=True) for i, p in enumerate(points)}
            mk.values = masks
            loss = checked_loss(model, x, y, "sum", where)
            grads = torch.autograd.grad(loss, list(masks.values()), allow_unused=True)
            for i, gr in zip(masks, grads):
                if gr is None:
                    gr = torch.zeros_like(masks[i])
                check_finite_grad(gr, where)
                acc[i].append(gr.detach().double())
                spatial[i] = mk.spatial(i)
        mk.values = {}
    return points, {i: torch.cat(v) for i, v in acc.items()}, spatial


def group_sum(points: list[MaskPoint], per_point: Mapping[int, torch.Tensor], graph: ChannelGraph,
              scale: Mapping[int, float] | None = None) -> dict[str, torch.Tensor]:
    """Sum per-point tensors (last axis = channels) over the points of each group."""
    out: dict[str, torch.Tensor] = {}
    for i, p in enumerate(points):
        t = per_point[i] * (scale[i] if scale else 1.0)
        out[p.group] = out[p.group] + t if p.group in out else t
    for g in graph.prunable:
        if g.id not in out:
            out[g.id] = None  # type: ignore[assignment]
    return out


# --------------------------------------------------------------------------- consumer inputs (post-activation maps)


def consumer_view(module: nn.Module, member: Member, x: torch.Tensor, size: int) -> torch.Tensor | None:
    """The group's channels in a consumer's input ``x`` as (B, C, positions), or None if they cannot be found.

    Handles conv maps (B, C, H, W), vectors (B, C), a linear after flatten
    (B, C*k: k positions per channel) and a concat offset when the member has one.
    """
    off = int(getattr(member, "offset", 0) or 0)
    if x.dim() >= 3 and not isinstance(module, nn.Linear):
        if x.shape[1] < off + size:
            return None
        return x[:, off : off + size].flatten(2)
    if x.dim() == 2:
        feats = x.shape[1]
        if feats == size and off == 0:
            return x[:, :, None]
        if off == 0 and feats % size == 0:
            return x.reshape(x.shape[0], size, feats // size)
        if feats >= off + size:
            return x[:, off : off + size, None]
        return None
    if x.dim() == 3 and isinstance(module, nn.Linear) and x.shape[-1] >= off + size:  # (B, T, C)
        return x[..., off : off + size].transpose(1, 2)
    return None


def consumer_inputs(model: nn.Module, graph: ChannelGraph, batches: list, fn: Callable[[str, Member, nn.Module, torch.Tensor], None],
                    kinds: tuple[str, ...] | None = None) -> None:
    """Call ``fn(group_id, member, module, view)`` with each consumer's view of each group's channels, per batch
    (consumers of ``kinds``; default: conv, linear and registered layers, ``channel_kinds()``)."""
    kinds = channel_kinds() if kinds is None else kinds
    modules = dict(model.named_modules())
    hooks = []
    for g in graph.prunable:
        for mem in g.members:
            if mem.dim != "in" or mem.kind not in kinds or mem.layer not in modules:
                continue
            mod = modules[mem.layer]

            def pre(m: nn.Module, inp: Any, g: ChannelGroup = g, mem: Member = mem) -> None:
                v = consumer_view(m, mem, inp[0].detach(), g.size)
                if v is not None:
                    fn(g.id, mem, m, v)

            hooks.append(mod.register_forward_pre_hook(pre))
    model.eval()
    try:
        with torch.no_grad():
            for x, _y in batches:
                _run(model, x)
    finally:
        for h in hooks:
            h.remove()
