"""Fake-quantised PyTorch model with the ONNX Runtime engine's scales, for checking and for QAT.

:func:`prepare_qat` traces the model with ``torch.fx`` and inserts fake
quantisation exactly where ONNX Runtime's QDQ quantiser (see
:mod:`edgeprune.quant.ort_int8`) puts QuantizeLinear/DequantizeLinear:

* weights of Conv/Linear layers (modules, or ``F.conv2d``/``F.linear`` on a
  buffer such as the option-A select shortcut): per output channel, symmetric
  int8, ``scale = max|w| / 64`` with ``reduce_range`` (7-bit, q in [-64, 64])
  or ``/ 127`` without. Per-channel symmetric rounding commutes with the
  per-channel BatchNorm scale, so quantising the unfolded weight gives the same
  numbers as the engine quantising the BN-folded one.
* activations: every tensor that is an input or output of an op ORT
  quantises (conv, linear, add, mul, pooling, flatten, cat, ...), as
  asymmetric uint8, ``scale = (max(rmax, 0) - min(rmin, 0)) / 255``, zero
  point ``round(-rmin / scale)``, from min/max over the calibration data of the
  *float* model (ORT's MinMax calibrator). BatchNorm after a conv is folded
  (one quantisation point, after the BN) and a ReLU that is the only consumer
  of a tensor is absorbed, as ORT removes it (one point, after the ReLU).
* biases stay float (ORT stores them as int32 at scale ``s_in * s_w``: an
  error far below the activations' rounding).

Layers named in ``exclude`` keep float weights and do not make their own
inputs and outputs quantisation points, as in the engine.

Gradients flow through the rounding with the straight-through estimator
(clipped to the quantisation range for activations), so the recovery step can
fine-tune the returned module directly; :func:`strip_qat` gives back the
plain float model (it shares the trained parameters) to export and quantise.
"""
from __future__ import annotations

import copy
import operator
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgeprune.errors import BadInput

ACT_QMIN, ACT_QMAX = 0, 255


def weight_qmax(reduce_range: bool = True) -> int:
    """Largest |q| of the symmetric int8 weight grid: 64 with reduce_range (ORT's 7-bit range), else 127."""
    return 64 if reduce_range else 127


def weight_scale(w: torch.Tensor, reduce_range: bool = True, per_channel: bool = True) -> torch.Tensor:
    """ORT's symmetric weight scale, one per output channel (dim 0) or one per tensor (shape broadcastable to ``w``)."""
    a = w.detach().abs()
    absmax = a.flatten(1).amax(1) if per_channel and w.dim() > 1 else a.amax().reshape(1)
    scale = (absmax.double() / weight_qmax(reduce_range)).float()
    scale = torch.where(scale < torch.finfo(torch.float32).tiny, torch.ones_like(scale), scale)
    return scale.reshape(-1, *([1] * (w.dim() - 1))) if w.dim() > 1 else scale


def quantize_weight(w: torch.Tensor, reduce_range: bool = True, per_channel: bool = True) -> torch.Tensor:
    """``w`` rounded to the engine's int8 grid and dequantised (no gradient trick)."""
    qmax = weight_qmax(reduce_range)
    s = weight_scale(w, reduce_range, per_channel)
    return torch.clamp(torch.round(w / s), -qmax, qmax) * s


def fake_quant_weight(w: torch.Tensor, reduce_range: bool = True, per_channel: bool = True) -> torch.Tensor:
    """Weight fake quantisation with the straight-through estimator."""
    return w + (quantize_weight(w, reduce_range, per_channel) - w).detach()


def act_qparams(rmin: float, rmax: float, qmin: int = ACT_QMIN, qmax: int = ACT_QMAX) -> tuple[float, int]:
    """ORT's asymmetric activation (scale, zero_point) for a calibrated range (quant_utils.compute_scale_zp)."""
    import numpy as np

    rmin, rmax = min(float(rmin), 0.0), max(float(rmax), 0.0)
    scale64 = (rmax - rmin) / (qmax - qmin)
    if np.float32(scale64) < np.finfo(np.float32).tiny:
        return 1.0, 0
    zp = int(np.clip(np.round(qmin - rmin / scale64), qmin, qmax))
    return float(np.float32(scale64)), zp


class ActQuant(nn.Module):
    """uint8 asymmetric activation fake quantisation with a min/max observer."""

    def __init__(self, point: str = "") -> None:
        super().__init__()
        self.point = point
        self.register_buffer("min_val", torch.tensor(float("inf")))
        self.register_buffer("max_val", torch.tensor(float("-inf")))
        self.observe = False
        self.enabled = True

    def qparams(self) -> tuple[float, int]:
        """(scale, zero_point) from the observed range."""
        return act_qparams(float(self.min_val), float(self.max_val))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observe:
            with torch.no_grad():
                self.min_val.copy_(torch.minimum(self.min_val, x.detach().min()))
                self.max_val.copy_(torch.maximum(self.max_val, x.detach().max()))
        if not self.enabled or not bool(torch.isfinite(self.min_val)):
            return x
        scale, zp = self.qparams()
        q = torch.clamp(torch.round(x / scale) + zp, ACT_QMIN, ACT_QMAX)
        y = (q - zp) * scale
        if not (torch.is_grad_enabled() and x.requires_grad):
            return y
        lo, hi = (ACT_QMIN - zp) * scale, (ACT_QMAX - zp) * scale
        mask = (x >= lo) & (x <= hi)
        return y.detach() + (x - x.detach()) * mask

    def extra_repr(self) -> str:
        return f"point={self.point!r}"


class WeightQuant(nn.Module):
    """Fake-quantises a weight tensor passed through it (used for ``F.conv2d(x, self.weight)`` style layers)."""

    def __init__(self, reduce_range: bool = True, per_channel: bool = True) -> None:
        super().__init__()
        self.reduce_range, self.per_channel = reduce_range, per_channel

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return fake_quant_weight(w, self.reduce_range, self.per_channel)


class QuantLayer(nn.Module):
    """Runs a Conv/Linear module with its weight fake-quantised; the module itself stays where it was (shared)."""

    def __init__(self, module: nn.Module, name: str, reduce_range: bool = True, per_channel: bool = True) -> None:
        super().__init__()
        object.__setattr__(self, "module", module)  # not a submodule: the float model keeps owning it
        object.__setattr__(self, "input_quant", None)  # the ActQuant feeding this layer, for the int32 bias scale
        self.layer = name
        self.reduce_range, self.per_channel = reduce_range, per_channel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.module
        w = fake_quant_weight(m.weight, self.reduce_range, self.per_channel)
        b = m.bias
        aq = self.input_quant
        if b is not None and aq is not None and aq.enabled and bool(torch.isfinite(aq.min_val)):
            # ORT stores the bias as int32 at scale s_in * s_w (per channel)
            bs = (aq.qparams()[0] * weight_scale(m.weight, self.reduce_range, self.per_channel).flatten()).to(b.dtype)
            b = b + (torch.round(b / bs) * bs - b).detach()
        if isinstance(m, nn.Linear):
            return F.linear(x, w, b)
        return m._conv_forward(x, w, b)

    def extra_repr(self) -> str:
        return f"layer={self.layer!r}"


# ------------------------------------------------------------------ graph analysis

_RELU_F = {F.relu, torch.relu, torch.relu_}
_ADD_F = {operator.add, operator.iadd, torch.add}
_MUL_F = {operator.mul, operator.imul, torch.mul}
_POOL_F = {F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.max_pool1d, F.avg_pool1d, F.adaptive_avg_pool1d}
_MOVE_F = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, torch.transpose, torch.permute, torch.cat, torch.concat}
_ACT_F = {F.relu6, F.hardtanh, F.leaky_relu, torch.sigmoid, F.sigmoid, F.softmax, torch.softmax, torch.clamp, torch.clip}
_MOVE_M = {"flatten", "view", "reshape", "squeeze", "unsqueeze", "transpose", "permute"}
_ACT_M = {"sigmoid", "softmax", "clamp", "clip"}


def _kind(node: torch.fx.Node, modules: dict[str, nn.Module]) -> str:
    """conv | linear | bn | relu | identity | q (other op ORT quantises) | other."""
    if node.op == "call_module":
        m = modules[node.target]
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return "conv"
        if isinstance(m, nn.Linear):
            return "linear"
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            return "bn"
        if isinstance(m, nn.ReLU):
            return "relu"
        if isinstance(m, (nn.Identity, nn.Dropout)):
            return "identity"
        if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.ReLU6, nn.Hardtanh, nn.LeakyReLU, nn.Sigmoid, nn.Softmax, nn.MaxPool1d, nn.AvgPool1d)):
            return "q"
        return "other"
    if node.op == "call_function":
        t = node.target
        if t in (F.conv1d, F.conv2d, F.conv3d):
            return "conv"
        if t is F.linear:
            return "linear"
        if t in _RELU_F:
            return "relu"
        if t in _ADD_F or t in _MUL_F:
            return "q" if any(isinstance(a, torch.fx.Node) for a in node.args) else "other"
        if t in _POOL_F or t in _MOVE_F or t in _ACT_F:
            return "q"
        if t is F.dropout:
            return "identity"
        return "other"
    if node.op == "call_method":
        if node.target in ("relu", "relu_"):
            return "relu"
        if node.target in ("add", "add_", "mul", "mul_") or node.target in _MOVE_M or node.target in _ACT_M:
            return "q"
        return "other"
    return "other"


def _layer_name(node: torch.fx.Node) -> str:
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack")
    if stack:
        return list(stack.values())[-1][0]
    return node.name


def _act_args(node: torch.fx.Node, kind: str) -> list[torch.fx.Node]:
    """The activation (not weight) inputs of a node."""
    if kind in ("conv", "linear"):
        return [node.args[0]] if node.args and isinstance(node.args[0], torch.fx.Node) else []
    out: list[torch.fx.Node] = []
    for a in node.args:
        if isinstance(a, torch.fx.Node):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            out += [b for b in a if isinstance(b, torch.fx.Node)]
    return out


def _matches(layer: str, exclude: Sequence[str]) -> bool:
    return any(layer == e or layer.startswith(e + ".") for e in exclude)


def prepare_qat(
    model: nn.Module,
    exclude: Sequence[str] = (),
    calib: Any = None,
    *,
    reduce_range: bool | None = None,
    per_channel: bool = True,
    target: Any = None,
    batch_size: int = 256,
    fold_bn: bool = True,
) -> torch.fx.GraphModule:
    """A fake-quantised copy of ``model`` that computes what the ORT int8 engine computes.

    ``exclude``: layer (module) names kept fp32, as given to ``quantize_onnx``.
    ``calib``: calibration images (NCHW tensor/array, an ImageSet, or an
    iterable of batches / (x, y) pairs); when given, activation ranges are
    observed on the float model right away (:func:`calibrate_qat`).
    ``reduce_range``: 7-bit weights; default from ``target``'s options (cpu-ort: on),
    else True.
    ``fold_bn``: fold each BatchNorm into the conv before it, as the ONNX export
    does, so weights *and* the int32 bias are quantised exactly like the engine's
    (BN statistics are then frozen during QAT, the usual choice for a short
    fine-tune). Without it BN stays a separate float op: close to the engine,
    but the bias rounding is not modelled.
    The original model is not modified; :func:`strip_qat` returns the float
    copy whose parameters the returned module trains.
    """
    if reduce_range is None:
        if target is not None:
            from edgeprune.quant.ort_int8 import int8_format

            if not hasattr(target, "options"):
                from edgeprune.config import get_target

                target = get_target(target)
            reduce_range = int8_format(target)[2]
        else:
            reduce_range = True
    float_model = copy.deepcopy(model)
    if fold_bn:
        from torch.fx.experimental.optimization import fuse

        was_training = float_model.training
        try:
            float_model = fuse(float_model.eval(), inplace=True)
        except Exception as err:  # noqa: BLE001 - fx fusion raises many kinds
            raise BadInput(f"prepare_qat: cannot fold BatchNorm into the convolutions ({str(err).splitlines()[0] if str(err) else err!r})") from None
        float_model.train(was_training)
    try:
        gm = torch.fx.symbolic_trace(float_model)
    except Exception as err:  # noqa: BLE001 - fx tracing raises many kinds
        raise BadInput(f"prepare_qat: the model cannot be traced with torch.fx ({str(err).splitlines()[0] if str(err) else err!r})") from None
    modules = dict(gm.named_modules())
    graph = gm.graph
    nodes = list(graph.nodes)
    kinds = {n: _kind(n, modules) for n in nodes}
    layers = {n: _layer_name(n) for n in nodes}
    known = {layers[n] for n in nodes if kinds[n] in ("conv", "linear")}
    bad = [e for e in exclude if not any(k == e or k.startswith(e + ".") for k in known)]
    if bad:
        raise BadInput(f"prepare_qat: exclude {', '.join(map(repr, bad))} names no conv/linear layer (e.g. {', '.join(sorted(known)[:5])})")

    excluded = {n for n in nodes if kinds[n] in ("conv", "linear") and _matches(layers[n], exclude)}
    # a BN right after a conv is folded into it: it shares the conv's precision
    for n in nodes:
        src = n.args[0] if n.args else None
        if kinds[n] == "bn" and isinstance(src, torch.fx.Node) and kinds[src] == "conv" and len(src.users) == 1 and src in excluded:
            excluded.add(n)
    quantised_ops = {n for n in nodes if kinds[n] in ("conv", "linear", "bn", "relu", "q") and n not in excluded}

    def act_users(t: torch.fx.Node) -> list[torch.fx.Node]:
        return [u for u in t.users if t in _act_args(u, kinds[u])]

    points: list[torch.fx.Node] = []
    for t in nodes:
        if t.op not in ("placeholder", "call_module", "call_function", "call_method") or kinds[t] == "identity":
            continue
        users = list(t.users)
        if not (t in quantised_ops or any(u in quantised_ops for u in act_users(t))):
            continue
        if kinds[t] == "conv" and len(users) == 1 and kinds[users[0]] == "bn":
            continue  # BN folded: the point is after the BN
        if len(users) == 1 and kinds[users[0]] == "relu" and users[0] not in excluded:
            continue  # ReLU absorbed by the uint8 range: the point is after the ReLU
        if t.op == "placeholder" and not act_users(t):
            continue
        points.append(t)

    # weights
    counter = 0
    for n in nodes:
        if kinds[n] not in ("conv", "linear") or n in excluded:
            continue
        if n.op == "call_module":
            name = f"_qlayer_{counter}"
            counter += 1
            gm.add_module(name, QuantLayer(modules[n.target], str(n.target), reduce_range, per_channel))
            n.target = name
        elif len(n.args) > 1 and isinstance(n.args[1], torch.fx.Node):
            name = f"_qweight_{counter}"
            counter += 1
            gm.add_module(name, WeightQuant(reduce_range, per_channel))
            with graph.inserting_before(n):
                wq = graph.call_module(name, (n.args[1],))
            n.args = (n.args[0], wq, *n.args[2:])
    # activations
    for i, t in enumerate(points):
        name = f"_qact_{i}"
        gm.add_module(name, ActQuant(f"{layers[t]}:{t.name}" if t.op != "placeholder" else t.name))
        with graph.inserting_after(t):
            q = graph.call_module(name, (t,))
        t.replace_all_uses_with(q, delete_user_cb=lambda u, q=q: u is not q)
    for n in graph.nodes:
        if n.op == "call_module" and isinstance(getattr(gm, str(n.target), None), QuantLayer):
            src = n.args[0]
            if isinstance(src, torch.fx.Node) and src.op == "call_module" and isinstance(getattr(gm, str(src.target), None), ActQuant):
                object.__setattr__(getattr(gm, str(n.target)), "input_quant", getattr(gm, str(src.target)))
    graph.lint()
    gm.recompile()
    object.__setattr__(gm, "_ep_float_model", float_model)
    object.__setattr__(gm, "_ep_config", {"reduce_range": reduce_range, "per_channel": per_channel, "exclude": list(exclude)})
    if calib is not None:
        calibrate_qat(gm, calib, batch_size=batch_size)
    return gm


def _batches(data: Any, batch_size: int) -> Iterable[torch.Tensor]:
    if hasattr(data, "batches") and callable(data.batches):
        for x, _ in data.batches(batch_size):
            yield x
        return
    if hasattr(data, "train") and hasattr(data.train, "batches"):
        yield from _batches(data.train, batch_size)
        return
    if isinstance(data, torch.Tensor) or hasattr(data, "__array__"):
        x = torch.as_tensor(data, dtype=torch.float32)
        for i in range(0, len(x), batch_size):
            yield x[i : i + batch_size]
        return
    for item in data:
        yield item[0] if isinstance(item, (tuple, list)) else item


def calibrate_qat(gm: nn.Module, data: Any, batch_size: int = 256) -> nn.Module:
    """Observe activation ranges on the *float* computation (quantisation off), as ORT's calibrator does; then enable quantisation."""
    aq = [m for m in gm.modules() if isinstance(m, ActQuant)]
    was_training = gm.training
    gm.eval()
    for m in aq:
        m.min_val.fill_(float("inf"))
        m.max_val.fill_(float("-inf"))
        m.observe, m.enabled = True, False
    lq = [m for m in gm.modules() if isinstance(m, (QuantLayer, WeightQuant))]
    saved = [(m, m.forward) for m in lq]
    for m in lq:  # float weights while calibrating
        if isinstance(m, QuantLayer):
            m.forward = m.module.forward  # type: ignore[method-assign]
        else:
            m.forward = lambda w: w  # type: ignore[method-assign]
    try:
        n = 0
        with torch.no_grad():
            for x in _batches(data, batch_size):
                gm(x)
                n += len(x)
        if n == 0:
            raise BadInput("calibrate_qat: no calibration data")
    finally:
        for m, fwd in saved:
            m.forward = fwd  # type: ignore[method-assign]
        for m in aq:
            m.observe, m.enabled = False, True
        gm.train(was_training)
    return gm


def convert_scales(gm: nn.Module) -> dict[str, Any]:
    """Freeze the observers and return the engine's scales.

    ``{"weights": {layer: [scale per output channel]}, "activations": {point: {"scale", "zero_point", "min", "max"}},
    "reduce_range": bool}``. A point is named ``layer:fx_node`` (the module the tensor comes from).
    """
    cfg = getattr(gm, "_ep_config", {"reduce_range": True, "per_channel": True})
    out: dict[str, Any] = {"weights": {}, "activations": {}, "reduce_range": cfg["reduce_range"]}
    for m in gm.modules():
        if isinstance(m, ActQuant):
            m.observe = False
            scale, zp = m.qparams()
            out["activations"][m.point] = {"scale": scale, "zero_point": zp, "min": float(m.min_val), "max": float(m.max_val)}
        elif isinstance(m, QuantLayer):
            out["weights"][m.layer] = weight_scale(m.module.weight, m.reduce_range, m.per_channel).flatten().tolist()
    return out


def strip_qat(gm: nn.Module) -> nn.Module:
    """The plain float model behind a :func:`prepare_qat` module (its parameters are the ones QAT trained)."""
    model = getattr(gm, "_ep_float_model", None)
    if model is None:
        raise BadInput("strip_qat: not a module made by prepare_qat")
    return model


__all__ = [
    "ActQuant",
    "QuantLayer",
    "WeightQuant",
    "act_qparams",
    "calibrate_qat",
    "convert_scales",
    "fake_quant_weight",
    "prepare_qat",
    "quantize_weight",
    "strip_qat",
    "weight_scale",
]
