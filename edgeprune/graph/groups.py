"""Channel groups: coupled channel dimensions that must be removed together.

Built on Torch-Pruning's ``DependencyGraph`` (a maintained library that already
handles residual adds, concatenation, depthwise convs, reshapes and attention;
see docs/graph.md for why), with edgeprune's own pieces on top: the option-A
:class:`~edgeprune.models.SelectShortcut` pruner, stable group ids, and the
layer signatures that key the latency tables.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeprune.errors import BadInput, UnsupportedLayer
from edgeprune.graph.signature import LayerSignature
from edgeprune.models.cifar_resnet import SelectShortcut

# leaf modules we know how to prune or that carry no channel state; anything else with
# parameters is refused with its name rather than pruned wrongly
_KNOWN_PARAM_MODULES = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
    nn.LayerNorm, nn.GroupNorm, nn.PReLU, nn.Embedding, nn.MultiheadAttention, SelectShortcut,
)


@dataclass(frozen=True)
class Member:
    """One layer dimension inside a group.

    ``dim`` is "out" (the layer's output channels, and for BN/LayerNorm/depthwise
    convs/attention/parameters the one channel axis they have) or "in" (the input
    channels of a conv/linear/select layer). ``kind`` is "conv2d", "linear",
    "select", "bn", "layernorm", "multiheadattention", "param" (an ``nn.Parameter``
    owned directly by a container, named by its parameter path), ...

    Channel ``c`` of the group is the member's channels
    ``offset + c*span ... offset + (c+1)*span - 1``: ``offset`` is non-zero for a
    consumer that reads the group as one slice of a concatenation (DenseNet,
    SqueezeNet), ``span`` is above 1 for a linear layer after a flatten (VGG: 49
    input features per channel). A per-channel quantity of the member (length
    ``in``/``out`` channels of the layer) reduces to the group's size with
    ``v[offset : offset + size*span].reshape(size, span).sum(1)``.
    """

    layer: str
    kind: str
    dim: str
    offset: int = 0
    span: int = 1


@dataclass
class ChannelGroup:
    """A set of coupled channels: one decision variable for the planner.

    ``unit`` is the number of consecutive channels that go together: 1 for
    plain channels, the group width of a grouped conv (RegNet: 8), the head
    size of an ``nn.MultiheadAttention`` (ViT: whole heads). Channels
    ``[j*unit, (j+1)*unit)`` are kept or removed as one block, so a kept count
    is a multiple of ``unit`` (or the whole group). ``reason`` says why a group
    is not prunable.
    """

    id: str
    size: int
    prunable: bool
    members: list[Member] = field(default_factory=list)
    reason: str = ""
    unit: int = 1

    @property
    def layers(self) -> list[str]:
        """Names of the layers the group touches."""
        return sorted({m.layer for m in self.members})

    @property
    def units(self) -> int:
        """How many blocks of ``unit`` channels the group has."""
        return self.size // self.unit

    def producers(self) -> list[str]:
        """Conv/linear layers whose output channels are this group."""
        return [m.layer for m in self.members if m.dim == "out" and m.kind in ("conv2d", "linear", "select")]

    def consumers(self) -> list[str]:
        """Conv/linear layers whose input channels are this group."""
        return [m.layer for m in self.members if m.dim == "in" and m.kind in ("conv2d", "linear", "select")]

    def expand_units(self, units: Sequence[int]) -> list[int]:
        """Channel indices of the given blocks (``unit`` channels each)."""
        return [j * self.unit + i for j in sorted({int(u) for u in units}) for i in range(self.unit)]


@dataclass
class LayerInfo:
    """A conv/linear layer, its signature and the groups setting its in/out channels (None = fixed).

    ``in_groups`` lists every group the input channels come from: one for most
    layers, several for a layer reading a concatenation (DenseNet, SqueezeNet),
    where ``in_group`` is None and the input width is the sum of the parts
    (plus any fixed channels). ``in_spans`` gives the input features per
    channel of each part (49 for VGG's first linear layer after a flatten).
    """

    name: str
    signature: LayerSignature
    in_group: str | None
    out_group: str | None
    in_groups: tuple[str, ...] = ()
    in_spans: tuple[int, ...] = ()


@dataclass
class ChannelGraph:
    """The groups of a model and the layers they size; what ``channel_groups`` returns (a list-like)."""

    groups: list[ChannelGroup]
    layers: dict[str, LayerInfo]
    example_inputs: Any
    ignored: tuple[str, ...] = ()
    # per group id: what ``prune`` removes from each member (see _Slice)
    plans: dict[str, list[_Slice]] = field(default_factory=dict, repr=False)
    output_shapes: Any = field(default=None, repr=False)

    def __iter__(self):
        return iter(self.groups)

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, i: int) -> ChannelGroup:
        return self.groups[i]

    def group(self, gid: str) -> ChannelGroup:
        """The group with id ``gid``."""
        for g in self.groups:
            if g.id == gid:
                return g
        raise BadInput(f"unknown channel group {gid!r}")

    @property
    def prunable(self) -> list[ChannelGroup]:
        """Groups the planner may shrink."""
        return [g for g in self.groups if g.prunable]

    def signatures(self, widths: Mapping[str, int] | None = None, dtypes: Mapping[str, str] | None = None) -> dict[str, LayerSignature]:
        """Layer signatures with group ``widths`` applied (missing groups keep their size)."""
        widths = widths or {}
        out = {}
        sizes = {g.id: g.size for g in self.groups}
        for name, info in self.layers.items():
            sig = info.signature
            cin = widths.get(info.in_group, sig.in_channels) if info.in_group else sig.in_channels
            if info.in_groups:  # subtract what each part loses (span: inputs per channel after a flatten)
                spans = info.in_spans or (1,) * len(info.in_groups)
                cin = sig.in_channels - sum((sizes[g] - widths.get(g, sizes[g])) * k for g, k in zip(info.in_groups, spans))
            cout = widths.get(info.out_group, sig.out_channels) if info.out_group else sig.out_channels
            dtype = (dtypes or {}).get(name, sig.dtype)
            out[name] = sig.with_channels(cin, cout, dtype)
        return out


# --------------------------------------------------------------------------- torch-pruning glue


def _tp():
    try:
        import torch_pruning as tp
    except ImportError as err:  # pragma: no cover - a base dependency
        raise BadInput(f"torch-pruning is required for channel groups: {err}") from None
    return tp


def _select_pruner():
    tp = _tp()

    class SelectShortcutPruner(tp.pruner.BasePruningFunc):
        """Rows of the 0/1 selection matrix follow the output group, columns the input group."""

        def prune_out_channels(self, layer: SelectShortcut, idxs: Sequence[int]) -> nn.Module:
            keep = sorted(set(range(layer.weight.shape[0])) - set(idxs))
            layer._buffers["weight"] = layer.weight[keep].contiguous()
            return layer

        def prune_in_channels(self, layer: SelectShortcut, idxs: Sequence[int]) -> nn.Module:
            keep = sorted(set(range(layer.weight.shape[1])) - set(idxs))
            layer._buffers["weight"] = layer.weight[:, keep].contiguous()
            return layer

        def get_out_channels(self, layer: SelectShortcut) -> int:
            return layer.weight.shape[0]

        def get_in_channels(self, layer: SelectShortcut) -> int:
            return layer.weight.shape[1]

    return SelectShortcutPruner()


# --------------------------------------------------------------------------- tracing


_RESHAPES = {"view", "reshape", "flatten", "unflatten", "view_as", "reshape_as"}
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)


class _ShapeRecorder(torch.overrides.TorchFunctionMode):
    """Records the input and output shape of every model-level reshape, keyed by the output's grad_fn.

    Ops inside a function (``F.multi_head_attention_forward``) are not seen: the
    mode is off while a handled function runs, which is what we want (a module
    with its own pruner owns its internals).
    """

    def __init__(self) -> None:
        super().__init__()
        self.records: dict[Any, tuple[str, tuple[int, ...], tuple[int, ...]]] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = getattr(func, "__name__", "")
        if name in _RESHAPES and isinstance(out, torch.Tensor) and out.grad_fn is not None \
                and args and isinstance(args[0], torch.Tensor):
            self.records[out.grad_fn] = (name, tuple(args[0].shape), tuple(out.shape))
        return out


def _reshape_safe(i: tuple[int, ...], o: tuple[int, ...]) -> bool:
    """A reshape keeps channel identity: no-op, NCHW spatial reshape, or NCHW flatten (channel-major)."""
    if i == o:
        return True
    if len(i) == 4 and len(o) >= 2 and o[:2] == i[:2]:
        return True
    return len(i) == 4 and len(o) == 2 and o[0] == i[0] and o[1] == i[1] * i[2] * i[3]


def _channel_dim_op(grad_fn: Any) -> bool:
    """A split/chunk/slice whose axis may be the channel axis (1, or the last one of a token tensor)."""
    dim = getattr(grad_fn, "_saved_dim", None)
    sizes = getattr(grad_fn, "_saved_self_sym_sizes", None)
    if dim is None or sizes is None:
        return True
    rank = len(sizes)
    if dim >= 2**31:  # an unset value on some torch builds
        return True
    dim = dim % rank if rank else dim
    return dim == 1 or (rank == 3 and dim == 2)


def _build_dg(model: nn.Module, example_inputs: Any):
    """Torch-Pruning's dependency graph with edgeprune's barrier pass.

    Returns the graph and the nodes that reorder or split channels (channel
    shuffle, chunk/split/slice on the channel axis): Torch-Pruning would map
    indices through them wrongly (a shuffle's transpose is taken for an
    element-wise op), so they are turned into opaque element-wise nodes and
    every group that reaches one is marked unprunable.
    """
    tp = _tp()
    from torch_pruning import ops
    from torch_pruning.dependency import index_mapping, shape_infer

    _check_supported(model)
    dg = tp.DependencyGraph()
    dg.verbose = False
    dg.model = model
    dg._module2name = {module: name for (name, module) in model.named_modules()}
    dg.register_customized_layer(SelectShortcut, _select_pruner())
    dg.ignored_params = []
    rec = _ShapeRecorder()
    try:
        dg._param_to_name, dg.unwrapped_parameters = dg._detect_unwrapped_parameters(None)
        outs: list[Any] = []

        def keep_output(out: Any) -> Any:
            outs.append(out)
            return out

        with torch.enable_grad(), rec:
            dg.module2node = dg._trace(model, example_inputs, None, output_transform=keep_output)
        from torch_pruning import utils as tp_utils

        out_fns = {o.grad_fn for o in tp_utils.flatten_as_list(outs[0]) if isinstance(o, torch.Tensor) and o.grad_fn is not None}
        dg._build_dependency(dg.module2node)
        barriers: dict[Any, str] = {}
        outputs: set[Any] = set()
        for node in dg.module2node.values():
            gf = node.grad_fn
            why = ""
            if gf in rec.records:
                fname, i, o = rec.records[gf]
                if not _reshape_safe(i, o):
                    why = f"{fname} {list(i)} -> {list(o)} reorders channels (channel shuffle or head split)"
            elif node.type in (ops.OPTYPE.SPLIT, ops.OPTYPE.UNBIND, ops.OPTYPE.SLICE) and _channel_dim_op(gf):
                why = f"{type(gf).__name__} splits the channel axis at fixed sizes"
            if gf in out_fns:
                outputs.add(node)
            if why:
                barriers[node] = why
                node.type = ops.OPTYPE.ELEMENTWISE
        shape_infer.init_shape_information(dg)
        index_mapping.update_index_mapping(dg)
    except UnsupportedLayer:
        raise
    except Exception as err:  # noqa: BLE001 - any tracing failure: one-line user-facing error
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UnsupportedLayer(f"cannot trace the model's channel dependencies: {msg}") from None
    return dg, barriers, outputs


@dataclass
class _Slice:
    """What removing group channels does to one member: ``member[i]`` goes when ``roots[i]`` is dropped."""

    name: str
    kind: str
    role: str  # "out" | "in"
    pdim: int  # pruning axis of a bare parameter
    roots: Any  # np.ndarray of group channel indices
    idx: Any  # np.ndarray of member channel indices


@dataclass
class _RawGroup:
    id: str
    size: int
    slices: dict[tuple[str, str], _Slice]
    reasons: list[str]
    unit: int = 1


def _affine(sl: _Slice, size: int) -> tuple[int, int] | None:
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


_PRUNABLE_KINDS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, SelectShortcut, nn.LayerNorm, nn.PReLU,
                   nn.Embedding, nn.MultiheadAttention) + _NORMS


def _analyse(model: nn.Module, example_inputs: Any, ignored: Sequence[nn.Module] = ()) -> list[_RawGroup]:
    """Trace, collect Torch-Pruning's groups as index maps, merge grouped convs, and mark what may not be pruned."""
    from torch_pruning import ops

    dg, barriers, outputs = _build_dg(model, example_inputs)
    mod_names = {m: n for n, m in model.named_modules()}
    param_names = {id(p): n for n, p in model.named_parameters()}
    ignored_ids = {id(m) for m in ignored}
    groups: list[_RawGroup] = []
    roots = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
    for g in _all_groups(dg, roots):
        root = g[0].dep.target.module
        size = dg.get_out_channels(root)
        if size is None or root not in mod_names:
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
            raw.slices[(name, role)] = _Slice(name, kind, role, pdim, np.array([p[0] for p in pairs], dtype=np.int64),
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
        if not isinstance(m, _CONV) or m.groups == 1 or (m.groups == m.in_channels == m.out_channels):
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
                sl = _Slice(sl.name, sl.kind, sl.role, sl.pdim, np.concatenate([old.roots, new_roots]), np.concatenate([old.idx, sl.idx]))
                go.slices[key] = sl
            else:
                go.slices[key] = _Slice(sl.name, sl.kind, sl.role, sl.pdim, new_roots, sl.idx)
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
        if not isinstance(m, _PRUNABLE_KINDS):
            raw.reasons.append(f"layer {name} ({type(m).__name__}) cannot be pruned by edgeprune")
        elif isinstance(m, nn.LayerNorm) and len(m.normalized_shape) != 1:
            raw.reasons.append(f"LayerNorm {name} normalises over {len(m.normalized_shape)} axes")
        elif isinstance(m, nn.MultiheadAttention):
            if not m._qkv_same_embed_dim or m.in_proj_weight is None or aff != (0, 1):
                raw.reasons.append(f"attention {name}: only packed q/k/v projections on the whole embedding are supported")
            else:
                raw.unit = math.lcm(raw.unit, m.head_dim)
        elif isinstance(m, _CONV) and getattr(m, "transposed", False):
            raw.reasons.append(f"transposed conv {name} is not supported")
    if raw.size % raw.unit:
        raw.reasons.append(f"group size {raw.size} is not a multiple of its unit {raw.unit}")


def _check_supported(model: nn.Module) -> None:
    for name, m in model.named_modules():
        if next(m.children(), None) is not None and not isinstance(m, nn.MultiheadAttention):
            continue
        has_params = any(True for _ in m.parameters(recurse=False))
        if has_params and not isinstance(m, _KNOWN_PARAM_MODULES):
            raise UnsupportedLayer(f"unsupported layer {name} ({type(m).__name__}): edgeprune cannot prune it safely")
        if isinstance(m, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
            raise UnsupportedLayer(f"unsupported layer {name} ({type(m).__name__}): transposed convs are not supported")


def _kind(m: nn.Module) -> str:
    if isinstance(m, SelectShortcut):
        return "select"
    if isinstance(m, nn.Conv2d):
        return "conv2d"
    if isinstance(m, nn.Linear):
        return "linear"
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        return "bn"
    return type(m).__name__.lower()


def _capture_inputs(model: nn.Module, example_inputs: Any) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, SelectShortcut)):
            def hook(mod: nn.Module, inp: Any, out: Any, name: str = name) -> None:
                shapes.setdefault(name, tuple(inp[0].shape))

            hooks.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            shapes["__output__"] = _shapes(_forward(model, example_inputs))  # type: ignore[assignment]
    except Exception as err:  # noqa: BLE001 - the user's model may raise anything: one-line user-facing error
        raise BadInput(f"the model does not run on the example input: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    finally:
        for h in hooks:
            h.remove()
    return shapes


def _forward(model: nn.Module, example_inputs: Any) -> Any:
    if isinstance(example_inputs, (tuple, list)):
        return model(*example_inputs)
    if isinstance(example_inputs, dict):
        return model(**example_inputs)
    return model(example_inputs)


def _post_ops(model: nn.Module) -> dict[str, str]:
    """What follows each conv/linear in the traced graph (``bn+relu``, ``bn+add+relu``); empty if fx cannot trace."""
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception:  # noqa: BLE001 - fx cannot trace every model: no post-ops then
        return {}
    mods = dict(gm.named_modules())
    post: dict[str, str] = {}

    def op_name(n: torch.fx.Node) -> str:
        if n.op == "call_module":
            m = mods[n.target]
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                return "bn"
            if isinstance(m, nn.ReLU):
                return "relu"
            return ""
        if n.op in ("call_function", "call_method"):
            t = getattr(n.target, "__name__", str(n.target))
            if t in ("relu", "relu_"):
                return "relu"
            if t in ("add", "iadd", "add_"):
                return "add"
        return ""

    for n in gm.graph.nodes:
        if n.op == "call_module" and isinstance(mods[n.target], (nn.Conv2d, nn.Linear)):
            chain, cur = [], n
            while len(cur.users) == 1:
                nxt = next(iter(cur.users))
                name = op_name(nxt)
                if not name or name in chain:
                    break
                chain.append(name)
                cur = nxt
                if name == "relu":
                    break
            post[n.target] = "+".join(chain)
    return post


def channel_groups(model: nn.Module, example_inputs: Any, ignored_layers: Sequence[str] = ()) -> ChannelGraph:
    """Trace ``model`` and return its channel groups with the layer signatures they size.

    Every coupled set of channels is one :class:`ChannelGroup`; groups that reach
    the network output, touch an ``ignored_layers`` module's outputs, or pass
    through something edgeprune cannot follow (a channel shuffle, a fixed-size
    split, a GroupNorm, a grouped conv with unequal in/out group widths) are
    returned with ``prunable=False`` and a ``reason``. The network input is in
    no group. A layer type it does not know raises :class:`UnsupportedLayer`.

    Example::

        graph = channel_groups(model, torch.randn(1, 3, 32, 32))
        keep = {g.id: range(g.size // 2) for g in graph.prunable if g.unit == 1}
        small = prune(model, keep, graph=graph)
    """
    model = model.eval()
    modules = dict(model.named_modules())
    for n in ignored_layers:
        if n not in modules:
            raise BadInput(f"unknown layer {n!r} in ignored_layers")
    shapes = _capture_inputs(model, example_inputs)
    raws = _analyse(model, example_inputs, [modules[n] for n in ignored_layers])
    groups: list[ChannelGroup] = []
    plans: dict[str, list[_Slice]] = {}
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
    post = _post_ops(model)
    layers: dict[str, LayerInfo] = {}
    for name, m in modules.items():
        if not isinstance(m, (nn.Conv2d, nn.Linear)):
            continue
        shp = shapes.get(name)
        if shp is None:
            continue
        if isinstance(m, nn.Conv2d):
            groups_ = -1 if (m.groups > 1 and m.groups == m.in_channels == m.out_channels) else m.groups
            sig = LayerSignature(
                "conv2d", m.in_channels, m.out_channels, tuple(m.kernel_size), tuple(m.stride),
                tuple(m.padding) if not isinstance(m.padding, str) else (m.kernel_size[0] // 2, m.kernel_size[1] // 2),
                groups_, (int(shp[-2]), int(shp[-1])), "fp32", post.get(name, ""),
            )
        else:
            sig = LayerSignature("linear", m.in_features, m.out_features, post=post.get(name, ""))
        ins = tuple(dict.fromkeys(layer_in.get(name, [])))
        layers[name] = LayerInfo(name, sig, ins[0][0] if len(ins) == 1 else None, layer_out.get(name),
                                 tuple(i[0] for i in ins), tuple(i[1] for i in ins))
    ignored = tuple(dict.fromkeys(output_layers + list(ignored_layers)))
    return ChannelGraph(groups, layers, example_inputs, ignored, plans, shapes.get("__output__"))


def prune(model: nn.Module, keep: Mapping[str, Sequence[int] | torch.Tensor], example_inputs: Any = None,
          graph: ChannelGraph | None = None) -> nn.Module:
    """A new model with only the ``keep[group_id]`` channels of each group: smaller tensors, not masks.

    Groups missing from ``keep`` stay whole; the input model is not modified.
    ``graph`` (from :func:`channel_groups` on this model) saves tracing again.
    A group with ``unit > 1`` keeps whole blocks of ``unit`` channels (grouped
    conv groups, attention heads). Asking to shrink an unprunable group, or a
    partial block, raises :class:`BadInput`; a layer that cannot be sliced
    correctly raises :class:`UnsupportedLayer` naming it. The pruned model is
    run once on the example input and must give the original output shape.
    """
    if graph is not None and example_inputs is None:
        example_inputs = graph.example_inputs
    if example_inputs is None:
        example_inputs = _guess_example(model)
    model = model.eval()
    if graph is None:
        graph = channel_groups(model, example_inputs)
    by_id = {g.id: g for g in graph.groups}
    drops: dict[tuple[str, str], set[int]] = {}
    kinds: dict[str, tuple[str, int]] = {}
    for gid, idx in keep.items():
        grp = by_id.get(gid)
        if grp is None:
            raise BadInput(f"unknown channel group {gid!r} (known: {', '.join(list(by_id)[:8])}...)")
        kept = sorted({int(i) for i in (idx.tolist() if isinstance(idx, torch.Tensor) else idx)})
        if not kept:
            raise BadInput(f"group {gid} would drop to zero channels")
        if kept[0] < 0 or kept[-1] >= grp.size:
            raise BadInput(f"group {gid}: kept index out of range 0..{grp.size - 1}")
        drop = np.array(sorted(set(range(grp.size)) - set(kept)), dtype=np.int64)
        if len(drop) == 0:
            continue
        if not grp.prunable:
            raise BadInput(f"group {gid} is not prunable: {grp.reason}")
        if grp.unit > 1 and not np.array_equal(np.unique(drop // grp.unit).repeat(grp.unit) * grp.unit
                                               + np.tile(np.arange(grp.unit), len(np.unique(drop // grp.unit))), drop):
            raise BadInput(f"group {gid} is pruned in whole blocks of {grp.unit} channels "
                           "(grouped-conv groups or attention heads); use ChannelGroup.expand_units")
        for sl in graph.plans[gid]:
            gone = sl.idx[np.isin(sl.roots, drop)]
            drops.setdefault((sl.name, sl.role), set()).update(int(i) for i in gone)
            kinds[sl.name] = (sl.kind, sl.pdim)
    ref = graph.output_shapes
    if ref is None:
        with torch.no_grad():
            ref = _shapes(_forward(model, example_inputs))
    new = copy.deepcopy(model).eval()
    if drops:
        _apply(new, drops, kinds)
        _fix_attributes(new)
        try:
            with torch.no_grad():
                out = _forward(new, example_inputs)
        except Exception as err:  # noqa: BLE001 - any failure of the pruned model: one-line user-facing error
            msg = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise UnsupportedLayer(f"the pruned model does not run ({msg}): some layer hard-codes a channel count "
                                   "edgeprune cannot update; leave its groups whole") from None
        if _shapes(out) != ref:
            raise UnsupportedLayer(f"the pruned model's output shape changed ({ref} -> {_shapes(out)})")
    return new


def _shapes(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return tuple(out.shape)
    if isinstance(out, (tuple, list)):
        return tuple(_shapes(o) for o in out)
    if isinstance(out, dict):
        return {k: _shapes(v) for k, v in out.items()}
    return None


# --------------------------------------------------------------------------- slicing


def _keep(n: int, drop: set[int]) -> torch.Tensor:
    return torch.tensor([i for i in range(n) if i not in drop], dtype=torch.long)


def _param(p: torch.Tensor | None, dim: int, keep: torch.Tensor) -> Any:
    if p is None:
        return None
    t = p.data.index_select(dim, keep)
    return nn.Parameter(t, requires_grad=p.requires_grad) if isinstance(p, nn.Parameter) else t


def _blocks(drop: set[int], width: int, name: str, what: str) -> set[int]:
    blocks = {i // width for i in drop}
    if {b * width + k for b in blocks for k in range(width)} != drop:
        raise UnsupportedLayer(f"grouped conv {name}: removing {what} channels {sorted(drop)[:8]}... "
                               f"does not remove whole groups of {width}")
    return blocks


def _apply(model: nn.Module, drops: Mapping[tuple[str, str], set[int]], kinds: Mapping[str, tuple[str, int]]) -> None:
    modules = dict(model.named_modules())
    params = dict(model.named_parameters())
    for name, (kind, pdim) in kinds.items():
        out_d = drops.get((name, "out"), set())
        in_d = drops.get((name, "in"), set())
        if not out_d and not in_d:
            continue
        if kind == "param":
            owner_name, _, attr = name.rpartition(".")
            owner = modules[owner_name]
            p = params[name]
            setattr(owner, attr, _param(p, pdim % p.dim(), _keep(p.shape[pdim], out_d)))
            continue
        m = modules[name]
        if isinstance(m, _CONV):
            _prune_conv(name, m, out_d, in_d)
        elif isinstance(m, nn.Linear):
            if out_d:
                k = _keep(m.out_features, out_d)
                m.weight, m.bias = _param(m.weight, 0, k), _param(m.bias, 0, k)
                m.out_features = len(k)
            if in_d:
                k = _keep(m.in_features, in_d)
                m.weight = _param(m.weight, 1, k)
                m.in_features = len(k)
        elif isinstance(m, SelectShortcut):
            w = m.weight
            if out_d:
                w = w[_keep(w.shape[0], out_d)]
            if in_d:
                w = w[:, _keep(w.shape[1], in_d)]
            m._buffers["weight"] = w.contiguous()
        elif isinstance(m, _NORMS):
            k = _keep(m.num_features, out_d | in_d)
            m.weight, m.bias = _param(m.weight, 0, k), _param(m.bias, 0, k)
            for b in ("running_mean", "running_var"):
                if getattr(m, b, None) is not None:
                    m._buffers[b] = getattr(m, b).index_select(0, k)
            m.num_features = len(k)
        elif isinstance(m, nn.LayerNorm):
            k = _keep(m.normalized_shape[0], out_d | in_d)
            m.weight, m.bias = _param(m.weight, 0, k), _param(m.bias, 0, k)
            m.normalized_shape = (len(k),)
        elif isinstance(m, nn.PReLU):
            if m.num_parameters > 1:
                k = _keep(m.num_parameters, out_d | in_d)
                m.weight = _param(m.weight, 0, k)
                m.num_parameters = len(k)
        elif isinstance(m, nn.Embedding):
            k = _keep(m.embedding_dim, out_d | in_d)
            m.weight = _param(m.weight, 1, k)
            m.embedding_dim = len(k)
        elif isinstance(m, nn.MultiheadAttention):
            _prune_mha(name, m, out_d | in_d)
        else:
            raise UnsupportedLayer(f"layer {name} ({type(m).__name__}) cannot be pruned by edgeprune")


def _prune_conv(name: str, m: nn.Module, out_d: set[int], in_d: set[int]) -> None:
    g, cin, cout = m.groups, m.in_channels, m.out_channels
    if g == 1:
        if out_d:
            k = _keep(cout, out_d)
            m.weight, m.bias = _param(m.weight, 0, k), _param(m.bias, 0, k)
            m.out_channels = len(k)
        if in_d:
            k = _keep(cin, in_d)
            m.weight = _param(m.weight, 1, k)
            m.in_channels = len(k)
        return
    if g == cin == cout:  # depthwise: channel c in is channel c out
        if out_d and in_d and out_d != in_d:
            raise UnsupportedLayer(f"depthwise conv {name}: input and output channels would be pruned differently")
        k = _keep(cout, out_d | in_d)
        m.weight, m.bias = _param(m.weight, 0, k), _param(m.bias, 0, k)
        m.in_channels = m.out_channels = m.groups = len(k)
        return
    ipg, opg = cin // g, cout // g
    bo, bi = _blocks(out_d, opg, name, "output"), _blocks(in_d, ipg, name, "input")
    if bo != bi:
        raise UnsupportedLayer(f"grouped conv {name}: input and output would lose different groups")
    kb = [b for b in range(g) if b not in bo]
    k = torch.tensor([b * opg + i for b in kb for i in range(opg)], dtype=torch.long)
    m.weight, m.bias = _param(m.weight, 0, k), _param(m.bias, 0, k)
    m.groups, m.out_channels, m.in_channels = len(kb), len(kb) * opg, len(kb) * ipg


def _prune_mha(name: str, m: nn.MultiheadAttention, drop: set[int]) -> None:
    e, hd = m.embed_dim, m.head_dim
    k = _keep(e, drop)
    if len(k) % hd or _blocks(drop, hd, name, "embedding") is None:
        raise UnsupportedLayer(f"attention {name}: pruning must remove whole heads of {hd} channels")
    rows = torch.cat([k, k + e, k + 2 * e])
    m.in_proj_weight = _param(_param(m.in_proj_weight, 0, rows), 1, k)
    m.in_proj_bias = _param(m.in_proj_bias, 0, rows)
    if m.bias_k is not None:
        m.bias_k, m.bias_v = _param(m.bias_k, 2, k), _param(m.bias_v, 2, k)
    lin = m.out_proj
    lin.weight = _param(_param(lin.weight, 0, k), 1, k)
    lin.bias = _param(lin.bias, 0, k)
    lin.in_features = lin.out_features = len(k)
    m.embed_dim = m.kdim = m.vdim = len(k)
    m.num_heads = len(k) // hd


def _fix_attributes(model: nn.Module) -> None:
    """Python-int channel counts that known model classes keep beside their layers (torchvision ViT)."""
    for m in model.modules():
        if type(m).__name__ == "VisionTransformer" and hasattr(m, "hidden_dim") and isinstance(getattr(m, "conv_proj", None), nn.Conv2d):
            m.hidden_dim = m.conv_proj.out_channels
        if type(m).__name__ == "EncoderBlock" and isinstance(getattr(m, "self_attention", None), nn.MultiheadAttention):
            m.num_heads = m.self_attention.num_heads


def _guess_example(model: nn.Module) -> torch.Tensor:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return torch.zeros(1, m.in_channels, 32, 32)
        if isinstance(m, nn.Linear):
            return torch.zeros(1, m.in_features)
    raise BadInput("cannot guess an example input for this model; pass example_inputs")
