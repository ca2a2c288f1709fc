"""Channel groups: coupled channel dimensions that must be removed together.

Built on Torch-Pruning's ``DependencyGraph`` (a maintained library that already
handles residual adds, concatenation, depthwise convs, reshapes and attention;
see docs/graph.md for why), with edgeprune's own pieces on top: the option-A
:class:`~edgeprune.models.SelectShortcut` pruner, stable group ids, and the
layer signatures that key the latency tables.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

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
    """One layer dimension inside a group: ``dim`` is "out" or "in"."""

    layer: str
    kind: str
    dim: str


@dataclass
class ChannelGroup:
    """A set of coupled channels: one decision variable for the planner."""

    id: str
    size: int
    prunable: bool
    members: list[Member] = field(default_factory=list)
    reason: str = ""

    @property
    def layers(self) -> list[str]:
        """Names of the layers the group touches."""
        return sorted({m.layer for m in self.members})

    def producers(self) -> list[str]:
        """Conv/linear layers whose output channels are this group."""
        return [m.layer for m in self.members if m.dim == "out" and m.kind in ("conv2d", "linear", "select")]

    def consumers(self) -> list[str]:
        """Conv/linear layers whose input channels are this group."""
        return [m.layer for m in self.members if m.dim == "in" and m.kind in ("conv2d", "linear", "select")]


@dataclass
class LayerInfo:
    """A conv/linear layer, its signature and the groups setting its in/out channels (None = fixed)."""

    name: str
    signature: LayerSignature
    in_group: str | None
    out_group: str | None


@dataclass
class ChannelGraph:
    """The groups of a model and the layers they size; what ``channel_groups`` returns (a list-like)."""

    groups: list[ChannelGroup]
    layers: dict[str, LayerInfo]
    example_inputs: Any
    ignored: tuple[str, ...] = ()

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
        for name, info in self.layers.items():
            sig = info.signature
            cin = widths.get(info.in_group, sig.in_channels) if info.in_group else sig.in_channels
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


def _classifier_layers(model: nn.Module, example_inputs: Any) -> list[nn.Module]:
    """Layers whose output channels are the network's output (never pruned)."""
    names = dict(model.named_modules())
    last = None
    for name, m in names.items():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            last = m
    return [last] if last is not None else []


def _build_dg(model: nn.Module, example_inputs: Any):
    # ignored layers go to get_all_groups only: passing them to build_dependency would
    # trace them as raw ops and let groups leak through them
    tp = _tp()
    _check_supported(model)
    try:
        dg = tp.DependencyGraph().build_dependency(
            model,
            example_inputs=example_inputs,
            customized_pruners={SelectShortcut: _select_pruner()},
            verbose=False,
        )
    except Exception as err:
        raise UnsupportedLayer(f"cannot trace the model's channel dependencies: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    return dg


def _check_supported(model: nn.Module) -> None:
    for name, m in model.named_modules():
        if next(m.children(), None) is not None:
            continue
        has_params = any(True for _ in m.parameters(recurse=False))
        if has_params and not isinstance(m, _KNOWN_PARAM_MODULES):
            raise UnsupportedLayer(f"unsupported layer {name} ({type(m).__name__}): edgeprune cannot prune it safely")


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
            _forward(model, example_inputs)
    except Exception as err:
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
    except Exception:
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

    The output layer's output channels and the network input are never prunable;
    ``ignored_layers`` (module names) are kept whole as well.
    """
    model = model.eval()
    names = {m: n for n, m in model.named_modules()}
    modules = dict(model.named_modules())
    for n in ignored_layers:
        if n not in modules:
            raise BadInput(f"unknown layer {n!r} in ignored_layers")
    ignored = _classifier_layers(model, example_inputs) + [modules[n] for n in ignored_layers]
    shapes = _capture_inputs(model, example_inputs)
    dg = _build_dg(model, example_inputs)
    tp = _tp()
    groups: list[ChannelGroup] = []
    layer_in: dict[str, str] = {}
    layer_out: dict[str, str] = {}
    seen_ids: set[str] = set()
    for g in dg.get_all_groups(ignored_layers=ignored, root_module_types=[nn.Conv2d, nn.Linear]):
        members = []
        for dep, _idxs in g:
            m = dep.target.module
            if m not in names or not isinstance(m, nn.Module):
                continue
            fn = dep.handler
            dim = "out" if fn in dg._out_channel_pruning_fn else "in"
            members.append(Member(names[m], _kind(m), dim))
        root = g[0].dep.target.module
        gid = names[root]
        if gid in seen_ids:
            continue
        seen_ids.add(gid)
        size = dg.get_out_channels(root)
        if size is None:
            continue
        members = sorted(set(members), key=lambda x: (x.layer, x.dim))
        grp = ChannelGroup(gid, int(size), True, members)
        for mem in members:
            if mem.kind in ("conv2d", "linear", "select"):
                (layer_out if mem.dim == "out" else layer_in)[mem.layer] = gid
        groups.append(grp)
    del tp
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
        layers[name] = LayerInfo(name, sig, layer_in.get(name), layer_out.get(name))
    return ChannelGraph(groups, layers, example_inputs, tuple(names[m] for m in ignored))


def prune(model: nn.Module, keep: Mapping[str, Sequence[int] | torch.Tensor], example_inputs: Any = None) -> nn.Module:
    """A new model with only the ``keep[group_id]`` channels of each group: smaller tensors, not masks.

    Groups missing from ``keep`` stay whole. The input model is not modified.
    """
    if example_inputs is None:
        example_inputs = _guess_example(model)
    new = copy.deepcopy(model).eval()
    graph = channel_groups(new, example_inputs)
    by_id = {g.id: g for g in graph.groups}
    modules = dict(new.named_modules())
    for gid in keep:
        if gid not in by_id:
            raise BadInput(f"unknown channel group {gid!r} (known: {', '.join(list(by_id)[:8])}...)")
    dg = _build_dg(new, example_inputs)
    # resolve every pruning group against the unpruned graph first, then execute them all:
    # the groups are disjoint, and torch-pruning's index mappings go stale after a prune
    todo = []
    for gid, idx in keep.items():
        grp = by_id[gid]
        kept = sorted({int(i) for i in (idx.tolist() if isinstance(idx, torch.Tensor) else idx)})
        if not kept:
            raise BadInput(f"group {gid} would drop to zero channels")
        if kept[0] < 0 or kept[-1] >= grp.size:
            raise BadInput(f"group {gid}: kept index out of range 0..{grp.size - 1}")
        drop = sorted(set(range(grp.size)) - set(kept))
        if not drop:
            continue
        root = modules[gid]
        fn = dg.get_pruner_of_module(root).prune_out_channels
        todo.append(dg.get_pruning_group(root, fn, drop))
    for pg in todo:
        pg.prune()
    return new


def _guess_example(model: nn.Module) -> torch.Tensor:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return torch.zeros(1, m.in_channels, 32, 32)
        if isinstance(m, nn.Linear):
            return torch.zeros(1, m.in_features)
    raise BadInput("cannot guess an example input for this model; pass example_inputs")
