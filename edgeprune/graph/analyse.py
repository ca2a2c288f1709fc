"""Dependency analysis: from a traced model to channel groups (:func:`channel_groups`).

Torch-Pruning's groups are collected as index maps (group channel -> member
channel), grouped convs are merged, and every group that may not be pruned is
marked with a reason.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from edgeprune.errors import BadInput
from edgeprune.graph.custom_layers import layer_pruner, registered_types
from edgeprune.graph.model import ChannelGraph, ChannelGroup, LayerInfo, Member, Slice
from edgeprune.graph.signature import LayerSignature
from edgeprune.graph.trace import (
    CONV,
    NORMS,
    build_dependency_graph,
    capture_inputs,
    is_unknown_leaf,
    post_ops,
    unknown_leaf_reason,
)

_PRUNABLE_KINDS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.LayerNorm, nn.PReLU,
                   nn.Embedding, nn.MultiheadAttention) + NORMS


@dataclass
class _RawGroup:
    id: str
    size: int
    slices: dict[tuple[str, str], Slice]
    reasons: list[str]
    unit: int = 1


def _affine(sl: Slice, size: int) -> tuple[int, int] | None:
    """(offset, span) when the member's channels are ``offset + c*span + k``, else None."""
    if len(sl.roots) == 0 or len(sl.roots) % size:
        return None
    span = len(sl.roots) // size
    order = np.lexsort((sl.idx, sl.roots))
    r, m = sl.roots[order], sl.idx[order]
    if not np.array_equal(r, np.repeat(np.arange(size), span)):
        return None
    off = int(m[0])
    if not np.array_equal(m, off + np.arange(size * span)):
        return None
    return off, span


def _analyse(model: nn.Module, example_inputs: Any, ignored: Sequence[nn.Module] = ()) -> list[_RawGroup]:
    """Trace, collect Torch-Pruning's groups as index maps, merge grouped convs, and mark what may not be pruned."""
    from torch_pruning import ops

    dg, barriers, outputs = build_dependency_graph(model, example_inputs)
    mod_names = {m: n for n, m in model.named_modules()}
    param_names = {id(p): n for n, p in model.named_parameters()}
    ignored_ids = {id(m) for m in ignored}
    groups: list[_RawGroup] = []
    roots = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
    # registered layers root a group only when no conv/linear group holds their outputs (ids stay those of convs)
    extra = tuple({type(m) for m in mod_names} & set(registered_types(channelwise=False)))
    found = [(g, False) for g in _all_groups(dg, roots)] + [(g, True) for g in (_all_groups(dg, extra) if extra else [])]
    for g, registered_root in found:
        root = g[0].dep.target.module
        size = dg.get_out_channels(root)
        if size is None or root not in mod_names:
            continue
        if registered_root and any((mod_names[root], "out") in r.slices for r in groups):
            continue
        raw = _RawGroup(mod_names[root], int(size), {}, [])
        acc: dict[tuple[str, str], tuple[str, int, list, list]] = {}
        for item in g:
            node, fn = item.dep.target, item.dep.handler
            target = node.module
            if isinstance(target, ops._OutputOp):
                raw.reasons.append("its channels are the network output")
                continue
            if node in barriers:
                raw.reasons.append(f"channels pass through an op edgeprune cannot follow: {barriers[node]}")
                continue
            if isinstance(target, nn.Parameter):
                name = param_names.get(id(target))
                if name is None:
                    continue
                kind, role, pdim = "param", "out", int(node.pruning_dim if node.pruning_dim is not None else -1)
            elif isinstance(target, nn.Module) and target in mod_names:
                name, kind, pdim = mod_names[target], _kind(target), 0
                pruner = dg.get_pruner_of_module(target)
                role = "in" if (pruner is not None and fn == pruner.prune_in_channels and fn != pruner.prune_out_channels) else "out"
                if role == "out" and id(target) in ignored_ids:
                    raw.reasons.append(f"layer {name} is ignored")
                if is_unknown_leaf(target):
                    raw.reasons.append(unknown_leaf_reason(name, target))
            else:
                if node in outputs:
                    raw.reasons.append("its channels are the network output")
                continue
            if node in outputs and role == "out":
                raw.reasons.append(f"its channels are the network output (layer {name})")
            pairs = [(r, i) for i, r in zip(item.idxs, item.root_idxs) if r is not None]
            entry = acc.setdefault((name, role), (kind, pdim, [], []))
            entry[2].extend(p[0] for p in pairs)
            entry[3].extend(p[1] for p in pairs)
        for (name, role), (kind, pdim, rs, ms) in acc.items():
            pairs = sorted(set(zip(rs, ms)))
            raw.slices[(name, role)] = Slice(name, kind, role, pdim, np.array([p[0] for p in pairs], dtype=np.int64),
                                              np.array([p[1] for p in pairs], dtype=np.int64))
        groups.append(raw)
    modules = dict(model.named_modules())
    groups = _merge_grouped_convs(groups, modules)
    for raw in groups:
        _check_group(raw, modules, dict(model.named_parameters()))
    return groups


def _all_groups(dg: Any, roots: tuple[type, ...]) -> list[Any]:
    """``dg.get_all_groups`` without re-deriving every index mapping per group.

    The graph does not change while groups are listed, and Torch-Pruning
    recomputes all concat/split/reshape mappings inside each
    ``get_pruning_group`` call (quadratic: 11 s for DenseNet-121); the
    mappings were computed once in :func:`_build_dg`.
    """
    import torch_pruning.dependency.graph as tp_graph

    real = tp_graph.index_mapping

    class _Frozen:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        @staticmethod
        def update_index_mapping(graph: Any) -> None:
            return None

    tp_graph.index_mapping = _Frozen()
    try:
        return list(dg.get_all_groups(ignored_layers=[], root_module_types=roots))
    finally:
        tp_graph.index_mapping = real


def _merge_grouped_convs(groups: list[_RawGroup], modules: Mapping[str, nn.Module]) -> list[_RawGroup]:
    """A grouped conv couples its input and output channels group by group: merge the two groups into one
    whose unit is the conv's group width, or mark them unprunable when the widths differ."""
    where = {key: g for g in groups for key in g.slices}
    for name, m in modules.items():
        if not isinstance(m, CONV) or m.groups == 1 or (m.groups == m.in_channels == m.out_channels):
            continue
        go, gi = where.get((name, "out")), where.get((name, "in"))
        ipg, opg = m.in_channels // m.groups, m.out_channels // m.groups
        involved = [g for g in (go, gi) if g is not None]
        if ipg != opg or go is None or gi is None or go is gi:
            for g in involved:
                g.reasons.append(f"grouped conv {name} ({m.groups} groups, {ipg} in / {opg} out channels per group) "
                                 "cannot be pruned in whole groups")
            continue
        c_out, c_in = go.slices[(name, "out")], gi.slices[(name, "in")]
        if go.size != gi.size or len(c_out.idx) != go.size or len(c_in.idx) != gi.size:
            for g in involved:
                g.reasons.append(f"grouped conv {name}: its input and output channel maps do not line up")
            continue
        r_of_c = np.empty(go.size, dtype=np.int64)
        r_of_c[c_out.idx] = c_out.roots
        if not np.array_equal(c_out.roots // opg, c_out.idx // opg):
            for g in involved:
                g.reasons.append(f"grouped conv {name}: conv groups are not aligned with the channel group")
            continue
        cin_of_r = np.empty(gi.size, dtype=np.int64)
        cin_of_r[c_in.roots] = c_in.idx
        for key, sl in gi.slices.items():
            new_roots = r_of_c[cin_of_r[sl.roots]]
            if key in go.slices:  # already there (a cycle): keep both maps
                old = go.slices[key]
                sl = Slice(sl.name, sl.kind, sl.role, sl.pdim, np.concatenate([old.roots, new_roots]), np.concatenate([old.idx, sl.idx]))
                go.slices[key] = sl
            else:
                go.slices[key] = Slice(sl.name, sl.kind, sl.role, sl.pdim, new_roots, sl.idx)
            where[key] = go
        go.reasons.extend(gi.reasons)
        go.unit = math.lcm(go.unit, gi.unit, opg)
        groups = [g for g in groups if g is not gi]
    return groups


def _check_group(raw: _RawGroup, modules: Mapping[str, nn.Module], params: Mapping[str, nn.Parameter]) -> None:
    """Mark a group unprunable (with a reason) unless every member can be sliced correctly."""
    for (name, role), sl in raw.slices.items():
        aff = _affine(sl, raw.size)
        if aff is None:
            raw.reasons.append(f"layer {name} sees the group's channels in a non-contiguous order")
            continue
        if sl.kind == "param":
            p = params[name]
            if p.shape[sl.pdim] != raw.size * aff[1] + aff[0] and p.shape[sl.pdim] < raw.size:
                raw.reasons.append(f"parameter {name} {tuple(p.shape)} does not carry the group on axis {sl.pdim}")
            continue
        m = modules[name]
        if is_unknown_leaf(m):
            raw.reasons.append(unknown_leaf_reason(name, m))
        elif not isinstance(m, _PRUNABLE_KINDS) and layer_pruner(m) is None:
            raw.reasons.append(f"layer {name} ({type(m).__name__}) cannot be pruned by edgeprune")
        elif isinstance(m, nn.LayerNorm) and len(m.normalized_shape) != 1:
            raw.reasons.append(f"LayerNorm {name} normalises over {len(m.normalized_shape)} axes")
        elif isinstance(m, nn.MultiheadAttention):
            if not m._qkv_same_embed_dim or m.in_proj_weight is None or aff != (0, 1):
                raw.reasons.append(f"attention {name}: only packed q/k/v projections on the whole embedding are supported")
            else:
                raw.unit = math.lcm(raw.unit, m.head_dim)
        elif isinstance(m, CONV) and getattr(m, "transposed", False):
            raw.reasons.append(f"transposed conv {name} is not supported")
    if raw.size % raw.unit:
        raw.reasons.append(f"group size {raw.size} is not a multiple of its unit {raw.unit}")


def _kind(m: nn.Module) -> str:
    """The member kind of a module: "conv2d", "linear", "bn", a registered kind, or the class name."""
    entry = layer_pruner(m)
    if entry is not None:
        return entry.kind
    if isinstance(m, nn.Conv2d):
        return "conv2d"
    if isinstance(m, nn.Linear):
        return "linear"
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        return "bn"
    return type(m).__name__.lower()


def channel_groups(model: nn.Module, example_inputs: Any, ignored_layers: Sequence[str] = ()) -> ChannelGraph:
    """Trace ``model`` and return its channel groups with the layer signatures they size.

    Every coupled set of channels is one :class:`ChannelGroup`; groups that reach
    the network output, touch an ``ignored_layers`` module's outputs, or pass
    through something edgeprune cannot follow (a channel shuffle, a fixed-size
    split, a GroupNorm, a grouped conv with unequal in/out group widths) are
    returned with ``prunable=False`` and a ``reason``. The network input is in
    no group. A leaf layer with parameters that edgeprune does not know (and
    nobody registered) freezes the groups it touches, with a reason naming it.

    Example::

        graph = channel_groups(model, example_input(model))
        keep = {g.id: range(g.size // 2) for g in graph.prunable if g.unit == 1}
        small = prune(model, keep, graph=graph)
    """
    model = model.eval()
    modules = dict(model.named_modules())
    for n in ignored_layers:
        if n not in modules:
            raise BadInput(f"unknown layer {n!r} in ignored_layers")
    pads: dict[str, Any] = {}
    shapes = capture_inputs(model, example_inputs, pads)
    raws = _analyse(model, example_inputs, [modules[n] for n in ignored_layers])
    groups: list[ChannelGroup] = []
    plans: dict[str, list[Slice]] = {}
    layer_in: dict[str, list[tuple[str, int]]] = {}
    layer_out: dict[str, str] = {}
    output_layers: list[str] = []
    for raw in raws:
        members = []
        for (name, role), sl in sorted(raw.slices.items()):
            aff = _affine(sl, raw.size) or (0, 1)
            members.append(Member(name, sl.kind, role, aff[0], aff[1]))
            if isinstance(modules.get(name), (nn.Conv2d, nn.Linear)):
                m = modules[name]
                if role == "out":
                    layer_out[name] = raw.id
                if role == "in" or (isinstance(m, nn.Conv2d) and m.groups == m.in_channels == m.out_channels > 1):
                    layer_in.setdefault(name, []).append((raw.id, aff[1]))  # depthwise: in == out
        reason = "; ".join(dict.fromkeys(raw.reasons))
        if any("network output" in r for r in raw.reasons):
            output_layers += [m.layer for m in members if m.dim == "out" and m.kind in ("conv2d", "linear")]
        groups.append(ChannelGroup(raw.id, raw.size, not raw.reasons, members, reason, raw.unit))
        plans[raw.id] = list(raw.slices.values())
    post = post_ops(model)
    layers: dict[str, LayerInfo] = {}
    for name, m in modules.items():
        if not isinstance(m, (nn.Conv2d, nn.Linear)):
            continue
        shp = shapes.get(name)
        if shp is None:
            continue
        if isinstance(m, nn.Conv2d):
            groups_ = -1 if (m.groups > 1 and m.groups == m.in_channels == m.out_channels) else m.groups
            padding = tuple(m.padding) if not isinstance(m.padding, str) else (m.kernel_size[0] // 2, m.kernel_size[1] // 2)
            in_hw = (int(shp[-2]), int(shp[-1]))
            if name in pads:  # zero padding done outside the conv (TF "SAME"): priced as the conv's own padding
                (t, b, lft, r), before = pads[name]
                padding = (padding[0] + (t + b + 1) // 2, padding[1] + (lft + r + 1) // 2)
                in_hw = (int(before[-2]), int(before[-1]))
            sig = LayerSignature(
                "conv2d", m.in_channels, m.out_channels, tuple(m.kernel_size), tuple(m.stride),
                padding, groups_, in_hw, "fp32", post.get(name, ""),
            )
        else:  # tokens: a Linear over (B, H, W, C) or (B, T, C) runs once per position (ConvNeXt, ViT, Swin MLPs)
            sig = LayerSignature("linear", m.in_features, m.out_features, in_hw=linear_tokens(shp),
                                 post=post.get(name, ""))
        ins = tuple(dict.fromkeys(layer_in.get(name, [])))
        layers[name] = LayerInfo(name, sig, ins[0][0] if len(ins) == 1 else None, layer_out.get(name),
                                 tuple(i[0] for i in ins), tuple(i[1] for i in ins))
    ignored = tuple(dict.fromkeys(output_layers + list(ignored_layers)))
    return ChannelGraph(groups, layers, example_inputs, ignored, plans, shapes.get("__output__"))


def linear_tokens(input_shape: tuple[int, ...] | list[int]) -> tuple[int, int]:
    """The positions a Linear runs over, as its signature's ``in_hw``: (H, W) for a (B, H, W, C) input, (T, 1) for
    (B, T, C), (1, 1) for (B, C) (a classifier); more leading dims fold into the first."""
    dims = [int(d) for d in input_shape[1:-1]]
    if not dims:
        return (1, 1)
    if len(dims) == 1:
        return (dims[0], 1)
    first = 1
    for d in dims[:-1]:
        first *= d
    return (first, dims[-1])
