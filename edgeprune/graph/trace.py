"""Tracing a model: Torch-Pruning's dependency graph with edgeprune's barrier pass, input shapes and post-ops.

Built on Torch-Pruning's ``DependencyGraph`` (a maintained library that already
handles residual adds, concatenation, depthwise convs, reshapes and attention;
see docs/graph.md for why). Custom leaf layers come from
:mod:`edgeprune.graph.custom_layers`.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from edgeprune.errors import BadInput, UnsupportedLayer
from edgeprune.graph.custom_layers import LAYER_PRUNERS, registered_types

# leaf modules we know how to prune or that carry no channel state; anything else with
# parameters (and not registered) is refused with its name rather than pruned wrongly
_KNOWN_PARAM_MODULES = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
    nn.LayerNorm, nn.GroupNorm, nn.PReLU, nn.Embedding, nn.MultiheadAttention,
)


def _tp():
    try:
        import torch_pruning as tp
    except ImportError as err:  # pragma: no cover - a base dependency
        raise BadInput(f"torch-pruning is required for channel groups: {err}") from None
    return tp


_RESHAPES = {"view", "reshape", "flatten", "unflatten", "view_as", "reshape_as"}
_CATS = {"cat", "concat", "concatenate"}
CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
NORMS = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)


class _ShapeRecorder(torch.overrides.TorchFunctionMode):
    """Records the input and output shape of every model-level reshape, keyed by the output's grad_fn.

    Ops inside a function (``F.multi_head_attention_forward``) are not seen: the
    mode is off while a handled function runs, which is what we want (a module
    with its own pruner owns its internals).
    """

    def __init__(self) -> None:
        super().__init__()
        self.records: dict[Any, tuple[str, tuple[int, ...], tuple[int, ...]]] = {}
        self.cat_sizes: dict[Any, list[int]] = {}  # a concat's output grad_fn -> its inputs' sizes on the cat axis

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        if not isinstance(out, torch.Tensor) or out.grad_fn is None or not args:
            return out
        if name in _RESHAPES and isinstance(args[0], torch.Tensor):
            self.records[out.grad_fn] = (name, tuple(args[0].shape), tuple(out.shape))
        elif name in _CATS and isinstance(args[0], (list, tuple)) and all(isinstance(t, torch.Tensor) for t in args[0]):
            dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
            self.cat_sizes[out.grad_fn] = [int(t.shape[dim]) for t in args[0]]
        return out


def _reshape_safe(i: tuple[int, ...], o: tuple[int, ...], channels: int | None = None) -> bool:
    """A reshape keeps channel identity: no-op, only size-1 axes added or removed (a layer scale's
    ``gamma.reshape(1, -1, 1, 1)``), NCHW spatial reshape, NCHW flatten (channel-major), or a
    channels-last reshape that keeps the last axis whole when that axis is the channel axis
    (``channels``, inferred from the layers around it; Swin's window partition)."""
    if i == o:
        return True
    if [d for d in i if d != 1] == [d for d in o if d != 1]:
        return True
    if channels is not None and len(i) >= 3 and len(o) >= 3 and i[-1] == o[-1] == channels and i[1] != channels:
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


def build_dependency_graph(model: nn.Module, example_inputs: Any) -> tuple[Any, dict[Any, str], set[Any]]:
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

    unknown = unknown_leaf_types(model)
    dg = tp.DependencyGraph()
    dg.verbose = False
    dg.model = model
    dg._module2name = {module: name for (name, module) in model.named_modules()}
    for cls, entry in LAYER_PRUNERS.items():
        dg.register_customized_layer(cls, entry.torch_pruning())
    for cls in unknown:  # one opaque node each: its groups are frozen (analyse.py), never sliced through
        dg.register_customized_layer(cls, _opaque_pruner(tp))
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
                if not _reshape_safe(i, o, _channels_around(dg, node) if i[-1:] == o[-1:] else None):
                    why = f"{fname} {list(i)} -> {list(o)} reorders channels (channel shuffle or head split)"
            elif node.type in (ops.OPTYPE.SPLIT, ops.OPTYPE.UNBIND, ops.OPTYPE.SLICE) and _channel_dim_op(gf):
                why = f"{type(gf).__name__} splits the channel axis at fixed sizes"
            elif node.type == ops.OPTYPE.EXPAND and len(getattr(gf, "_saved_self_sym_sizes", ()) or ()) == 5:
                # Torch-Pruning maps any 5-d expand as grouped-query attention (wrong on Swin, and its index
                # lists then grow without bound: the MemoryError of issue #24)
                why = f"expand {list(gf._saved_self_sym_sizes)} repeats channels"
            if gf in out_fns:
                outputs.add(node)
            if why:
                barriers[node] = why
                node.type = ops.OPTYPE.ELEMENTWISE
        shape_infer.init_shape_information(dg)
        _known_concat_sizes(dg, rec.cat_sizes, ops)
        index_mapping.update_index_mapping(dg)
        _unseen_reshapes(dg, rec.records, barriers)
        _guard_index_maps(dg)
    except UnsupportedLayer:
        raise
    except Exception as err:  # noqa: BLE001 - any tracing failure: one-line user-facing error
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UnsupportedLayer(f"cannot trace the model's channel dependencies: {msg}") from None
    return dg, barriers, outputs


def _known_concat_sizes(dg: Any, cat_sizes: dict[Any, list[int]], ops: Any) -> None:
    """Give each concat node its inputs' real sizes, as traced. Torch-Pruning infers them by walking the graph with
    a step budget, which deep residual stacks exhaust (Swin-S's patch merging: None sizes, then a TypeError)."""
    for node in dg.module2node.values():
        sizes = cat_sizes.get(node.grad_fn)
        if node.type == ops.OPTYPE.CONCAT and sizes is not None and len(sizes) == len(node.inputs) \
                and getattr(node.module, "concat_sizes", None) is None:
            node.module.concat_sizes = sizes


def is_unknown_leaf(m: nn.Module) -> bool:
    """A leaf module with its own parameters that is neither a known layer nor registered (timm's LayerScale)."""
    if next(m.children(), None) is not None and not isinstance(m, nn.MultiheadAttention):
        return False
    has_params = any(True for _ in m.parameters(recurse=False))
    return has_params and not isinstance(m, _KNOWN_PARAM_MODULES) and type(m) not in LAYER_PRUNERS


def unknown_leaf_types(model: nn.Module) -> set[type]:
    """Classes of the model's unknown leaf layers (traced as opaque nodes, their groups frozen); transposed
    convs are refused in one line."""
    found: set[type] = set()
    for name, m in model.named_modules():
        if isinstance(m, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
            raise UnsupportedLayer(f"unsupported layer {name} ({type(m).__name__}): transposed convs are not supported")
        if is_unknown_leaf(m):
            found.add(type(m))
    return found


def unknown_leaf_reason(name: str, m: nn.Module) -> str:
    """Why a group touching the unknown leaf layer ``name`` is frozen, and how to teach edgeprune the layer."""
    cls = type(m).__name__
    return (f"layer {name} ({cls}) is a leaf layer with parameters edgeprune does not know: register a handler with "
            f"edgeprune.graph.register_layer({cls}, prune_fn=..., channelwise=True for a per-channel op) to prune it")


def _opaque_pruner(tp: Any) -> Any:
    """A Torch-Pruning pruner that only marks where an unknown layer is (separate input and output sides)."""

    class OpaquePruner(tp.pruner.BasePruningFunc):
        """Never prunes: the groups it touches are frozen before anything is sliced."""

        def prune_out_channels(self, layer: nn.Module, idxs: Any) -> nn.Module:
            raise UnsupportedLayer(f"{type(layer).__name__} cannot be pruned")

        def prune_in_channels(self, layer: nn.Module, idxs: Any) -> nn.Module:
            raise UnsupportedLayer(f"{type(layer).__name__} cannot be pruned")

        def get_out_channels(self, layer: nn.Module) -> None:
            return None

        def get_in_channels(self, layer: nn.Module) -> None:
            return None

    return OpaquePruner()


def _channels_around(dg: Any, node: Any) -> int | None:
    """The channel count Torch-Pruning infers next to ``node`` (from the layers before it, else after it)."""
    import warnings

    from torch_pruning.dependency import shape_infer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            for n in node.inputs:
                c = shape_infer.infer_out_channels_recursively(dg, n, [0])
                if c:
                    return int(c)
            for n in node.outputs:
                c = shape_infer.infer_in_channels_recursively(dg, n, [0])
                if c:
                    return int(c)
        except (TypeError, ValueError, AttributeError):  # its inference trips on some graphs: unknown then
            return None
    return None


# an index list longer than this means a mapping went wrong (the largest real one, VGG's flatten, is 25k)
INDEX_LIMIT = 1 << 21


class _GuardedMap:
    """Wraps one Torch-Pruning index mapping: refuses, before allocating, a list longer than :data:`INDEX_LIMIT`."""

    def __init__(self, fn: Any, where: str) -> None:
        self.fn, self.where = fn, where

    def __call__(self, idxs: Any) -> Any:
        stride = getattr(self.fn, "_stride", 1)
        grows = not getattr(self.fn, "reverse", True)
        if len(idxs) * (stride if grows else 1) > INDEX_LIMIT:
            raise UnsupportedLayer(f"channel analysis stopped: the index map through {self.where} would hold "
                                   f"{len(idxs) * stride:,} entries (limit {INDEX_LIMIT:,}); the model has an op "
                                   "edgeprune cannot follow (pass it in ignored_layers, or report the model)")
        out = self.fn(idxs)
        if len(out) > INDEX_LIMIT:
            raise UnsupportedLayer(f"channel analysis stopped: the index map through {self.where} grew to "
                                   f"{len(out):,} entries (limit {INDEX_LIMIT:,})")
        return out


def _unseen_reshapes(dg: Any, seen: Mapping[Any, Any], barriers: dict[Any, str]) -> None:
    """A reshape inside an op (``matmul`` folding attention heads) that Torch-Pruning maps as a flatten
    becomes a barrier: the recorder never saw its shapes, and its mapping is a guess."""
    from torch_pruning import ops
    from torch_pruning.dependency.index_mapping import _FlattenIndexMapping

    flat = set()
    for node in dg.module2node.values():
        for dep in node.dependencies:
            if any(isinstance(f, _FlattenIndexMapping) for f in dep.index_mapping):
                flat.update((node, dep.target))
    for node in flat:
        if node.type == ops.OPTYPE.RESHAPE and node.grad_fn not in seen and node not in barriers:
            barriers[node] = f"{type(node.grad_fn).__name__} inside an op reshapes channels (attention heads)"
            node.type = ops.OPTYPE.ELEMENTWISE
            for other in (node, *node.inputs, *node.outputs):
                for dep in other.dependencies:
                    if dep.target is node or other is node:
                        dep.index_mapping = [None if isinstance(f, _FlattenIndexMapping) else f for f in dep.index_mapping]


def _guard_index_maps(dg: Any) -> None:
    """Put a :class:`_GuardedMap` around every index mapping of the graph (the MemoryError of issue #24)."""
    for node in dg.module2node.values():
        for dep in node.dependencies:
            for k, fn in enumerate(dep.index_mapping):
                if fn is not None and not isinstance(fn, _GuardedMap):
                    dep.index_mapping[k] = _GuardedMap(fn, str(node.name))


class _PadRecorder(torch.overrides.TorchFunctionMode):
    """Records zero padding (``F.pad``, ``nn.ZeroPad2d``, TF-style "SAME" convs) in front of each conv.

    ``pads[name]`` is ``(top, bottom, left, right)`` of the zero padding applied to
    conv ``name``'s input before it runs: by a pad op whose output is the conv's
    input, or by an ``F.pad`` inside the conv's own forward (timm's ``Conv2dSame``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.outputs: dict[int, tuple[torch.Tensor, tuple[int, int, int, int], tuple[int, ...]]] = {}
        self.current: list[tuple[str, Any]] = []  # (conv name, its input) while a conv's forward runs
        self.pads: dict[str, tuple[tuple[int, int, int, int], tuple[int, ...]]] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if getattr(func, "__name__", "") == "pad" and args and isinstance(args[0], torch.Tensor) and isinstance(out, torch.Tensor):
            pad = args[1] if len(args) > 1 else kwargs.get("pad")
            mode = args[2] if len(args) > 2 else kwargs.get("mode", "constant")
            value = args[3] if len(args) > 3 else kwargs.get("value", None)
            if mode == "constant" and not value and pad is not None and len(pad) >= 4 and args[0].dim() == 4:
                tblr = (int(pad[2]), int(pad[3]), int(pad[0]), int(pad[1]))
                self.outputs[id(out)] = (out, tblr, tuple(args[0].shape))
                if self.current and args[0] is self.current[-1][1]:
                    self.pads[self.current[-1][0]] = (tblr, tuple(args[0].shape))
        return out


def capture_inputs(model: nn.Module, example_inputs: Any,
                   pads: dict[str, tuple[tuple[int, int, int, int], tuple[int, ...]]] | None = None) -> dict[str, tuple[int, ...]]:
    """Input shape of every conv/linear/registered layer, and the model's output shapes under ``"__output__"``.

    ``pads``, when given, is filled with the zero padding done outside each conv
    (``(top, bottom, left, right)``, unpadded input shape), see :class:`_PadRecorder`.
    """
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = []
    rec = _PadRecorder()
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, *registered_types())):
            def hook(mod: nn.Module, inp: Any, out: Any, name: str = name) -> None:
                shapes.setdefault(name, tuple(inp[0].shape))
                if isinstance(mod, nn.Conv2d):
                    if rec.current and rec.current[-1][0] == name:
                        rec.current.pop()
                    got = rec.outputs.get(id(inp[0]))
                    if got is not None and got[0] is inp[0]:
                        rec.pads.setdefault(name, (got[1], got[2]))

            def pre(mod: nn.Module, inp: Any, name: str = name) -> None:
                if isinstance(mod, nn.Conv2d) and inp and isinstance(inp[0], torch.Tensor):
                    rec.current.append((name, inp[0]))

            hooks.append(m.register_forward_hook(hook))
            hooks.append(m.register_forward_pre_hook(pre))
    try:
        with torch.no_grad(), rec:
            shapes["__output__"] = output_shapes(run_model(model, example_inputs))  # type: ignore[assignment]
    except Exception as err:  # noqa: BLE001 - the user's model may raise anything: one-line user-facing error
        raise BadInput(f"the model does not run on the example input: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    finally:
        for h in hooks:
            h.remove()
    if pads is not None:
        pads.update(rec.pads)
    return shapes


def run_model(model: nn.Module, example_inputs: Any) -> Any:
    """``model`` called on ``example_inputs`` (a tensor, a tuple/list of positional inputs, or a dict of keywords)."""
    if isinstance(example_inputs, (tuple, list)):
        return model(*example_inputs)
    if isinstance(example_inputs, dict):
        return model(**example_inputs)
    return model(example_inputs)


def post_ops(model: nn.Module) -> dict[str, str]:
    """What follows each conv/linear in the traced graph (``bn+relu``, ``bn+add+relu``); empty if fx cannot trace."""
    class _Tracer(torch.fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return isinstance(m, (nn.Conv2d, nn.Linear)) or super().is_leaf_module(m, qualname)

    try:
        gm = torch.fx.GraphModule(model, _Tracer().trace(model))
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


def output_shapes(out: Any) -> Any:
    """The shapes of a model output (a tensor, or nested tuples/lists/dicts of them)."""
    if isinstance(out, torch.Tensor):
        return tuple(out.shape)
    if isinstance(out, (tuple, list)):
        return tuple(output_shapes(o) for o in out)
    if isinstance(out, dict):
        return {k: output_shapes(v) for k, v in out.items()}
    return None
