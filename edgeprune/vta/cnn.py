"""Any CNN on VTA: trace the model with torch.fx, put what fits on the accelerator, the rest on the host CPU.

On the accelerator (as :class:`~edgeprune.vta.quantize.QLayer`, one or more kernels each):

* ``Conv2d`` of any kernel size and stride (dilation 1), with a following ``BatchNorm2d`` folded in;
  grouped and depthwise convolutions as block-diagonal GEMMs (the compiler splits them into
  channel-block ranges, so a depthwise layer touches only its diagonal blocks);
* ``Linear`` as a 1x1 GEMM on a ``(C, 1, 1)`` input;
* a following ReLU (``MAX 0``) or ReLU6 (``MAX 0`` then ``MIN`` the int8 image of 6);
* a residual ``add`` of a convolution (no activation in between) and another tensor, fused
  into the convolution's accumulator (``ACC_8BIT`` load + ``SHR``), with an optional ReLU after.

On the host CPU (:class:`HostOp`, numpy/torch on the ARM core of the board): quantising the
input, global average pooling (integer mean, rounded half-up, same scale), and every other op
(pooling with windows, sigmoid, hardswish, multiplications of squeeze-excite, un-fusable adds,
reshapes...) in fp32 on the dequantised int8 inputs, requantised to int8 at the calibrated scale.
Each host step's DRAM transfers are priced in the cycle report (bytes / AXI bytes per cycle).

Quantisation is the scheme of :mod:`edgeprune.vta.quantize` (power-of-two scales, per-channel
weights, requantisation by ``SHR``).  :func:`reference_forward_cnn` is the numpy int8 reference.
"""
from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from edgeprune.errors import UnsupportedLayer
from edgeprune.vta.quantize import (
    QLayer,
    _pair,
    _requant,
    fold_bn,
    frac_for,
    host_avgpool,
    host_quantise_input,
    quantise,
    reference_layer,
)

_ALIAS_MODULES = (nn.Dropout, nn.Identity)
_RELU = ("relu", "relu6")


@dataclass
class HostOp:
    """One step on the host CPU: ``fn`` maps float (dequantised) inputs to a float output, or ``kind`` is exact integer."""

    name: str
    kind: str  # "avgpool" (integer global mean) | "float" (torch op in fp32, requantised)
    inputs: list[str]
    output: str
    what: str  # human-readable op description
    fn: Callable[..., torch.Tensor] | None = None
    in_shapes: list[tuple[int, ...]] = field(default_factory=list)  # per-image shapes the op was traced with


@dataclass
class CnnNet:
    """A quantised general CNN: steps in execution order, each a VTA layer or a host op."""

    input_frac: int
    input_shape: tuple[int, int, int]
    steps: list[QLayer | HostOp]
    shapes: dict[str, tuple[int, int, int]]  # tensor -> (C, H, W); 2-D tensors are (F, 1, 1)
    fracs: dict[str, int]
    output: str
    per_channel: bool = True

    @property
    def layers(self) -> list[QLayer]:
        """The VTA layers."""
        return [s for s in self.steps if isinstance(s, QLayer)]

    @property
    def host_ops(self) -> list[HostOp]:
        """The host steps."""
        return [s for s in self.steps if isinstance(s, HostOp)]

    @property
    def logits_frac(self) -> int:
        """frac of the int8 output."""
        return self.fracs[self.output]


# --------------------------------------------------------------------------- tracing helpers
def _act_kind(node: fx.Node, modules: dict[str, nn.Module]) -> str | None:
    """'relu' / 'relu6' when ``node`` is such an activation of one tensor, else None."""
    if node.op == "call_module":
        m = modules[node.target]
        if isinstance(m, nn.ReLU):
            return "relu"
        if isinstance(m, nn.ReLU6) or (isinstance(m, nn.Hardtanh) and (m.min_val, m.max_val) == (0.0, 6.0)):
            return "relu6"
    if node.op == "call_function" and node.target in (F.relu, torch.relu):
        return "relu"
    if node.op == "call_function" and node.target is F.relu6:
        return "relu6"
    if node.op == "call_method" and node.target == "relu":
        return "relu"
    return None


def _is_add(node: fx.Node) -> bool:
    return ((node.op == "call_function" and node.target in (operator.add, torch.add, operator.iadd)
             and len(node.args) == 2 and not node.kwargs)
            or (node.op == "call_method" and node.target in ("add", "add_") and len(node.args) == 2 and not node.kwargs))


def _is_global_pool(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        m = modules[node.target]
        return isinstance(m, nn.AdaptiveAvgPool2d) and _pair(m.output_size) == (1, 1)
    if node.op == "call_function" and node.target is F.adaptive_avg_pool2d:
        size = node.args[1] if len(node.args) > 1 else node.kwargs.get("output_size")
        return size in (1, (1, 1), [1, 1])
    return False


def _is_flatten(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules[node.target], nn.Flatten)
    if node.op == "call_function" and node.target is torch.flatten:
        return True
    return node.op == "call_method" and node.target in ("flatten", "view", "reshape")


def _users(node: fx.Node) -> list[fx.Node]:
    return list(node.users)


@torch.no_grad()
def _trace(model: nn.Module) -> fx.GraphModule:
    try:
        return fx.symbolic_trace(model.eval())
    except Exception as err:  # noqa: BLE001 - fx raises many kinds on untraceable control flow
        raise UnsupportedLayer(f"the VTA compiler cannot trace this model with torch.fx: {str(err).splitlines()[0]}") from None


@torch.no_grad()
def _calibrate(gm: fx.GraphModule, images: torch.Tensor) -> tuple[dict[str, float], dict[str, tuple[int, ...]]]:
    """Max |value| and the per-image shape of every node's output over ``images``."""
    stats: dict[str, float] = {}
    shapes: dict[str, tuple[int, ...]] = {}

    class Rec(fx.Interpreter):
        def run_node(self, n: fx.Node) -> Any:
            out = super().run_node(n)
            if isinstance(out, torch.Tensor) and out.is_floating_point():
                stats[n.name] = max(stats.get(n.name, 0.0), float(out.abs().max()) if out.numel() else 0.0)
                shapes[n.name] = tuple(int(s) for s in out.shape[1:])
            return out

    for i in range(0, len(images), 64):
        Rec(gm).run(images[i:i + 64].float())
    return stats, shapes


def _chw(shape: tuple[int, ...], what: str) -> tuple[int, int, int]:
    if len(shape) == 3:
        return (shape[0], shape[1], shape[2])
    if len(shape) == 1:
        return (shape[0], 1, 1)
    raise UnsupportedLayer(f"{what}: tensors of rank {len(shape) + 1} are not supported by the VTA compiler")


# --------------------------------------------------------------------------- quantisation
def quantize_cnn(model: nn.Module, calib_images: torch.Tensor, per_channel: bool = True) -> CnnNet:
    """Trace ``model`` (batch-1 CNN on NCHW images), calibrate on ``calib_images`` and quantise it to a :class:`CnnNet`."""
    if calib_images.ndim != 4 or len(calib_images) == 0:
        raise UnsupportedLayer("calibration images must be a non-empty N x C x H x W tensor")
    gm = _trace(model)
    modules = dict(gm.named_modules())
    stats, node_shapes = _calibrate(gm, calib_images)
    nodes = list(gm.graph.nodes)
    placeholders = [n for n in nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise UnsupportedLayer("the VTA compiler takes models with exactly one input")
    outputs = [n for n in nodes if n.op == "output"]
    out_arg = outputs[0].args[0]
    if not isinstance(out_arg, fx.Node):
        raise UnsupportedLayer("the VTA compiler takes models with exactly one tensor output")

    tensor: dict[str, str] = {}  # fx node name -> tensor name holding its value
    shapes: dict[str, tuple[int, int, int]] = {}
    fracs: dict[str, int] = {}
    steps: list[QLayer | HostOp] = []
    consumed: set[str] = set()  # nodes folded into an accelerator layer

    x0 = placeholders[0]
    tensor[x0.name] = "input"
    shapes["input"] = _chw(tuple(calib_images.shape[1:]), "input")
    fracs["input"] = frac_for(float(calib_images.abs().max()))

    def new_tensor(node: fx.Node) -> str:
        tensor[node.name] = node.name
        shapes[node.name] = _chw(node_shapes[node.name], node.name)
        fracs[node.name] = frac_for(stats[node.name])
        return node.name

    def single_user(node: fx.Node) -> fx.Node | None:
        us = _users(node)
        return us[0] if len(us) == 1 else None

    def accel_layer(node: fx.Node) -> None:
        """A Conv2d/Linear chain starting at ``node``: fold BN, fuse add / activation, emit one QLayer."""
        mod = modules[node.target]
        src = node.args[0]
        if not isinstance(src, fx.Node) or src.name not in tensor:
            raise UnsupportedLayer(f"{node.name}: input not produced by a traced tensor")
        end = node
        bn = None
        nxt = single_user(end)
        if isinstance(mod, nn.Conv2d) and nxt is not None and nxt.op == "call_module" \
                and isinstance(modules[nxt.target], nn.BatchNorm2d):
            bn, end = modules[nxt.target], nxt
            consumed.add(nxt.name)
        residual = None
        nxt = single_user(end)
        act = _act_kind(nxt, modules) if nxt is not None else None
        if nxt is not None and _is_add(nxt):
            other = nxt.args[1] if nxt.args[0] is end else nxt.args[0]
            if isinstance(other, fx.Node) and other.name in tensor and other is not end \
                    and _chw(node_shapes[other.name], other.name) == _chw(node_shapes[end.name], end.name):
                residual, end = tensor[other.name], nxt
                consumed.add(nxt.name)
                nxt = single_user(end)
                act = _act_kind(nxt, modules) if nxt is not None else None
        if act is not None:
            assert nxt is not None
            end = nxt
            consumed.add(nxt.name)
        s_in = tensor[src.name]
        out = new_tensor(end)
        w, b = fold_bn(mod, bn)
        groups = 1
        if isinstance(mod, nn.Conv2d):
            if mod.dilation not in ((1, 1), 1) or mod.padding_mode != "zeros" or isinstance(mod.padding, str):
                raise UnsupportedLayer(f"{node.name}: the VTA compiler supports dilation=1, numeric zero padding")
            groups = int(mod.groups)
            if groups > 1:  # dense block-diagonal weights: exact, and the compiler visits only the diagonal blocks
                o, ig, kh, kw = w.shape
                dense = np.zeros((o, ig * groups, kh, kw))
                og = o // groups
                for g in range(groups):
                    dense[g * og:(g + 1) * og, g * ig:(g + 1) * ig] = w[g * og:(g + 1) * og]
                w = dense
            stride, pad, kind = _pair(mod.stride), _pair(mod.padding), "conv"
        else:
            if shapes[s_in][1:] != (1, 1):
                raise UnsupportedLayer(f"{node.name}: a Linear layer on VTA needs a (C, 1, 1) input")
            stride, pad, kind = (1, 1), (0, 0), "dense"
        if w.shape[1] != shapes[s_in][0]:
            raise UnsupportedLayer(f"{node.name}: expects {w.shape[1]} input channels, gets {shapes[s_in][0]}")
        w_q, bias, shift, w_frac, res_shift = _requant(node.name, w, b, fracs[s_in], fracs[out], per_channel,
                                                       None if residual is None else fracs[residual])
        clip_hi = 127 if act != "relu6" else int(min(127, round(6.0 * 2.0 ** fracs[out])))
        steps.append(QLayer(node.name, kind, w_q, bias, shift, stride, pad, act is not None, s_in, out, residual,
                            res_shift, fracs[s_in], fracs[out], w_frac, clip_hi=clip_hi, groups=groups))

    for node in nodes:
        if node.op in ("placeholder", "output", "get_attr") or node.name in consumed:
            continue
        if node.op == "call_module" and isinstance(modules[node.target], _ALIAS_MODULES):
            tensor[node.name] = tensor[node.args[0].name]
            continue
        if node.op == "call_module" and isinstance(modules[node.target], (nn.Conv2d, nn.Linear)):
            accel_layer(node)
            continue
        ins = [a for a in node.all_input_nodes]
        if any(a.name not in tensor for a in ins):
            raise UnsupportedLayer(f"{node.name}: input produced by an op the VTA compiler cannot place")
        if node.name not in node_shapes:
            raise UnsupportedLayer(f"{node.name}: produces no float tensor ({node.op} {node.target})")
        if _is_flatten(node, modules) and len(ins) == 1 and shapes[tensor[ins[0].name]][1:] == (1, 1) \
                and len(node_shapes[node.name]) == 1:
            tensor[node.name] = tensor[ins[0].name]  # (C, 1, 1) -> (C,): same blocked bytes
            continue
        if _is_global_pool(node, modules) and len(ins) == 1:
            src = tensor[ins[0].name]
            out = new_tensor(node)
            fracs[out] = fracs[src]
            steps.append(HostOp(node.name, "avgpool", [src], out, "global average pool (integer mean)"))
            continue
        out = new_tensor(node)
        steps.append(HostOp(node.name, "float", [tensor[a.name] for a in ins], out, _describe(node, modules),
                            _host_fn(node, gm, ins), [node_shapes.get(a.name, ()) for a in ins]))
    final = tensor[out_arg.name]
    return CnnNet(fracs["input"], shapes["input"], steps, shapes, fracs, final, per_channel)


def _describe(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    if node.op == "call_module":
        return f"{type(modules[node.target]).__name__} (fp32 on the host)"
    target = getattr(node.target, "__name__", str(node.target))
    return f"{target} (fp32 on the host)"


def _host_fn(node: fx.Node, gm: fx.GraphModule, ins: list[fx.Node]) -> Callable[..., torch.Tensor]:
    """A function of the float inputs (in ``ins`` order) computing ``node``'s op."""
    index = {n.name: i for i, n in enumerate(ins)}

    def fn(*vals: torch.Tensor) -> torch.Tensor:
        args = fx.node.map_arg(node.args, lambda n: vals[index[n.name]])
        kwargs = fx.node.map_arg(node.kwargs, lambda n: vals[index[n.name]])
        if node.op == "call_module":
            return gm.get_submodule(node.target)(*args, **kwargs)
        if node.op == "call_method":
            return getattr(args[0], node.target)(*args[1:], **kwargs)
        return node.target(*args, **kwargs)

    return fn


# --------------------------------------------------------------------------- host steps and the reference
def _to_nchw(t: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    return t.reshape(t.shape[0], *shape)


@torch.no_grad()
def run_host_op(net: CnnNet, op: HostOp, values: list[np.ndarray]) -> np.ndarray:
    """One host step on int8 NCHW inputs -> int8 NCHW output (the same code in the reference and the simulation)."""
    if op.kind == "avgpool":
        return host_avgpool(values[0])
    assert op.fn is not None
    floats = []
    for name, shape, v in zip(op.inputs, op.in_shapes, values):
        t = torch.from_numpy(v.astype(np.float32) * np.float32(2.0 ** -net.fracs[name]))
        # 2-D tensors (after flatten) travel as (F, 1, 1): hand the op the shape it was traced with
        floats.append(t.reshape(t.shape[0], *shape))
    out = op.fn(*floats)
    out = _to_nchw(out.float(), net.shapes[op.output])
    return quantise(out.numpy(), net.fracs[op.output])


def reference_forward_cnn(net: CnnNet, x: torch.Tensor | np.ndarray, quantised: bool = False) -> dict[str, np.ndarray]:
    """Every tensor of the int8 network for input ``x`` (float NCHW, or int8 if ``quantised``): the numpy int8 reference."""
    xq = np.asarray(x, np.int8) if quantised else host_quantise_input(x, net.input_frac)
    t: dict[str, np.ndarray] = {"input": xq}
    for step in net.steps:
        if isinstance(step, QLayer):
            t[step.output] = reference_layer(step, t[step.input], t[step.residual] if step.residual else None)
        else:
            t[step.output] = run_host_op(net, step, [t[i] for i in step.inputs])
    return t


def dequantise_output(net: CnnNet, out: np.ndarray) -> np.ndarray:
    """int8 output -> float (N, F)."""
    return (out.astype(np.float64) * 2.0 ** -net.logits_frac).reshape(out.shape[0], -1)


__all__ = ["CnnNet", "HostOp", "dequantise_output", "quantize_cnn", "reference_forward_cnn", "run_host_op"]
