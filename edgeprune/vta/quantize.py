"""int8 quantisation of the CIFAR ResNet family for VTA, and the numpy int8 reference.

Scheme (chosen so every requantisation is a VTA ALU instruction):

* BatchNorm is folded into the preceding convolution.
* Every scale is a power of two, ``real = q * 2**-frac``.  Activations get one
  ``frac`` per tensor from calibration (largest frac whose int8 range covers
  the calibration maximum); weights get one ``frac`` per output channel
  (``per_channel=True``) or per tensor.
* A layer computes ``acc = sum(x*w) + bias [+ SHR(residual, res_shift)]`` in
  int32, then ``SHR(acc, shift)``, then ReLU (``MAX 0``) and clipping to int8
  (``MAX -128``/``MIN 127``).  Rounding is round-half-up: ``2**(shift-1)`` is
  folded into the bias.  ``SHR`` by a negative amount shifts left.
* Average pooling runs on the host: integer mean rounded half-up, same frac.

:func:`reference_forward` is the numpy int8 reference the simulator must match
bit for bit; it shares no code with the compiler or the simulator.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from edgeprune.errors import UnsupportedLayer

FRAC_MIN, FRAC_MAX = -8, 20
SHIFT_LIMIT = 31


@dataclass
class QLayer:
    """One VTA layer (conv2d or dense) in integer form."""

    name: str
    kind: str  # "conv" | "dense"
    weight: np.ndarray  # int8 (O, I, KH, KW)
    bias: np.ndarray  # int32 (O,), rounding offset included
    shift: np.ndarray  # int32 (O,): SHR amount applied after accumulation
    stride: tuple[int, int]
    padding: tuple[int, int]
    relu: bool
    input: str
    output: str
    residual: str | None = None
    res_shift: np.ndarray | None = None  # int32 (O,): SHR amount bringing the residual to the accumulator's scale
    in_frac: int = 0
    out_frac: int = 0
    w_frac: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    clip: bool = True  # False only when the result provably fits int8 (channel selections)
    clip_hi: int = 127  # upper clamp (MIN immediate): 127, or the int8 image of 6 for ReLU6
    groups: int = 1  # the source convolution's groups; ``weight`` is always dense (block-diagonal when grouped)

    @property
    def out_channels(self) -> int:
        """O."""
        return int(self.weight.shape[0])

    @property
    def in_channels(self) -> int:
        """I."""
        return int(self.weight.shape[1])

    @property
    def kernel(self) -> tuple[int, int]:
        """(KH, KW)."""
        return int(self.weight.shape[2]), int(self.weight.shape[3])

    @property
    def need_bias(self) -> bool:
        """Whether the bias add can be skipped (all zero)."""
        return bool(np.any(self.bias != 0))


@dataclass
class QNet:
    """A quantised network: host input quantisation, VTA layers, host pooling, the dense head."""

    input_frac: int
    input_shape: tuple[int, int, int]  # (C, H, W)
    layers: list[QLayer]  # in execution order; the dense head is the last one
    pool_input: str  # tensor the host average-pools into "pool"
    shapes: dict[str, tuple[int, int, int]]  # tensor name -> (C, H, W)
    fracs: dict[str, int]  # tensor name -> frac
    per_channel: bool = True

    @property
    def logits_frac(self) -> int:
        """frac of the int8 logits."""
        return self.fracs[self.layers[-1].output]


# --------------------------------------------------------------------------- helpers
def frac_for(max_abs: float) -> int:
    """Largest power-of-two frac with ``max_abs * 2**frac <= 127`` (clamped)."""
    if not max_abs > 0 or not math.isfinite(max_abs):
        return 0
    return int(min(FRAC_MAX, max(FRAC_MIN, math.floor(math.log2(127.0 / max_abs)))))


def quantise(x: np.ndarray, frac: int | np.ndarray) -> np.ndarray:
    """Round-to-nearest-even int8 of ``x * 2**frac``."""
    return np.clip(np.rint(np.asarray(x, np.float64) * np.exp2(frac)), -128, 127).astype(np.int8)


def shr(a: np.ndarray, s: np.ndarray | int) -> np.ndarray:
    """VTA's SHR on int32 lanes: arithmetic right shift by ``s``, left shift where ``s`` is negative (wrapping)."""
    a = np.asarray(a, np.int64)
    s = np.broadcast_to(np.asarray(s, np.int64), a.shape)
    right = a >> np.clip(s, 0, 63)
    left = wrap32(a << np.clip(-s, 0, 63))
    return np.where(s >= 0, right, left)


def wrap32(a: np.ndarray) -> np.ndarray:
    """Wrap int64 values to int32 two's complement (kept as int64)."""
    return ((np.asarray(a, np.int64) + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def fold_bn(conv: nn.Conv2d | nn.Linear, bn: nn.BatchNorm2d | None) -> tuple[np.ndarray, np.ndarray]:
    """(weight, bias) float64 of ``bn(conv(x))``."""
    w = conv.weight.detach().double().numpy()
    if w.ndim == 2:
        w = w[:, :, None, None]
    b = conv.bias.detach().double().numpy() if conv.bias is not None else np.zeros(w.shape[0])
    if bn is not None:
        scale = bn.weight.detach().double().numpy() / np.sqrt(bn.running_var.detach().double().numpy() + bn.eps)
        w = w * scale[:, None, None, None]
        b = (b - bn.running_mean.detach().double().numpy()) * scale + bn.bias.detach().double().numpy()
    return w, b


def _requant(name: str, w: np.ndarray, b: np.ndarray, in_frac: int, out_frac: int, per_channel: bool,
             res_frac: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """(w_q, bias_q, shift, w_frac, res_shift) for one layer."""
    absmax = np.abs(w).reshape(w.shape[0], -1).max(axis=1) if w.size else np.zeros(w.shape[0])
    if per_channel:
        w_frac = np.array([frac_for(m) for m in absmax], np.int64)
    else:
        w_frac = np.full(w.shape[0], frac_for(float(absmax.max(initial=0.0))), np.int64)
    acc_frac = in_frac + w_frac
    shift = acc_frac - out_frac
    res_shift = None if res_frac is None else res_frac - acc_frac
    for arr, what in ((shift, "requantisation shift"), (res_shift, "residual shift")):
        if arr is not None and np.any(np.abs(arr) > SHIFT_LIMIT):
            raise UnsupportedLayer(f"{name}: {what} of {int(np.abs(arr).max())} bits exceeds the ALU's {SHIFT_LIMIT}")
    w_q = quantise(w, w_frac[:, None, None, None])
    rounding = np.where(shift > 0, np.left_shift(1, np.clip(shift - 1, 0, 62)), 0)
    bias = np.rint(b * np.exp2(acc_frac)) + rounding
    bias = np.clip(bias, -(2**31), 2**31 - 1).astype(np.int32)
    return w_q, bias, shift.astype(np.int32), w_frac.astype(np.int32), None if res_shift is None else res_shift.astype(np.int32)


# --------------------------------------------------------------------------- model walk + calibration
def _check_family(model: nn.Module) -> None:
    for attr in ("conv1", "bn1", "layer1", "layer2", "layer3", "linear"):
        if not hasattr(model, attr):
            raise UnsupportedLayer(f"the VTA compiler supports the CIFAR ResNet family only (model has no {attr!r})")
    for stage in (model.layer1, model.layer2, model.layer3):
        for blk in stage:
            for attr in ("conv1", "bn1", "conv2", "bn2", "shortcut"):
                if not hasattr(blk, attr):
                    raise UnsupportedLayer(f"the VTA compiler supports BasicBlocks only (block has no {attr!r})")
            sc = blk.shortcut
            if not isinstance(sc, nn.Identity) and not (hasattr(sc, "weight") and hasattr(sc, "stride")):
                raise UnsupportedLayer(f"unsupported shortcut {type(sc).__name__} (expected Identity or SelectShortcut)")
    for conv in _convs(model):
        if conv.groups != 1 or conv.dilation not in ((1, 1), 1):
            raise UnsupportedLayer("the VTA compiler supports groups=1, dilation=1 convolutions only")


def _convs(model: nn.Module) -> list[nn.Conv2d]:
    out = [model.conv1]
    for stage in (model.layer1, model.layer2, model.layer3):
        for blk in stage:
            out += [blk.conv1, blk.conv2]
    return out


@torch.no_grad()
def calibrate(model: nn.Module, images: torch.Tensor) -> dict[str, float]:
    """Max |activation| of every quantised tensor over ``images`` (float NCHW)."""
    _check_family(model)
    model = model.eval()
    stats: dict[str, float] = {}

    def record(name: str, t: torch.Tensor, relu: bool = False) -> None:
        if relu:
            t = torch.relu(t)
        stats[name] = max(stats.get(name, 0.0), float(t.abs().max()))

    hooks = [model.bn1.register_forward_hook(lambda m, i, o: record("stem", o, True)),
             model.linear.register_forward_hook(lambda m, i, o: record("logits", o))]
    for si, stage in enumerate((model.layer1, model.layer2, model.layer3), start=1):
        for bi, blk in enumerate(stage):
            p = f"layer{si}.{bi}"
            hooks.append(blk.bn1.register_forward_hook(lambda m, i, o, p=p: record(f"{p}.h", o, True)))
            hooks.append(blk.register_forward_hook(lambda m, i, o, p=p: record(f"{p}.out", o)))
    try:
        for i in range(0, len(images), 64):
            model(images[i:i + 64].float())
    finally:
        for h in hooks:
            h.remove()
    stats["input"] = float(images.abs().max())
    return stats


def quantize_model(model: nn.Module, calib_images: torch.Tensor, per_channel: bool = True) -> QNet:
    """Fold BN, calibrate on ``calib_images`` (float NCHW) and quantise ``model`` to a :class:`QNet`."""
    _check_family(model)
    if calib_images.ndim != 4 or len(calib_images) == 0:
        raise UnsupportedLayer("calibration images must be a non-empty N x C x H x W tensor")
    stats = calibrate(model, calib_images)
    fr = {k: frac_for(v) for k, v in stats.items()}
    _, c, h, w = calib_images.shape
    shapes: dict[str, tuple[int, int, int]] = {"input": (int(c), int(h), int(w))}
    layers: list[QLayer] = []

    def conv_layer(name: str, conv: nn.Conv2d, bn: nn.Module | None, src: str, dst: str, relu: bool,
                   residual: str | None = None) -> None:
        wf, bf = fold_bn(conv, bn)
        w_q, bias, shift, w_frac, res_shift = _requant(name, wf, bf, fr[src], fr[dst], per_channel,
                                                       None if residual is None else fr[residual])
        kh, kw = w_q.shape[2:]
        stride, pad = _pair(conv.stride), _pair(conv.padding)
        ci, hh, ww = shapes[src]
        if ci != w_q.shape[1]:
            raise UnsupportedLayer(f"{name}: expects {w_q.shape[1]} input channels, gets {ci}")
        oh, ow = (hh + 2 * pad[0] - kh) // stride[0] + 1, (ww + 2 * pad[1] - kw) // stride[1] + 1
        shapes[dst] = (int(w_q.shape[0]), oh, ow)
        layers.append(QLayer(name, "conv", w_q, bias, shift, stride, pad, relu, src, dst, residual, res_shift,
                             fr[src], fr[dst], w_frac))

    conv_layer("conv1", model.conv1, model.bn1, "input", "stem", True)
    cur = "stem"
    for si, stage in enumerate((model.layer1, model.layer2, model.layer3), start=1):
        for bi, blk in enumerate(stage):
            p = f"layer{si}.{bi}"
            conv_layer(f"{p}.conv1", blk.conv1, blk.bn1, cur, f"{p}.h", True)
            res = cur
            if not isinstance(blk.shortcut, nn.Identity):
                sel = blk.shortcut.weight.detach().double().numpy()
                if sel.ndim == 2:
                    sel = sel[:, :, None, None]
                if not np.all(np.isin(sel, (0.0, 1.0))):
                    raise UnsupportedLayer(f"{p}.shortcut: only 0/1 selection shortcuts are supported")
                s = _pair(blk.shortcut.stride)
                ci, hh, ww = shapes[cur]
                res = f"{p}.sc"
                shapes[res] = (int(sel.shape[0]), (hh - 1) // s[0] + 1, (ww - 1) // s[1] + 1)
                fr[res] = fr[cur]
                w_q = sel.astype(np.int8)
                zeros = np.zeros(sel.shape[0], np.int32)
                one_per_row = bool(np.all(sel.reshape(sel.shape[0], -1).sum(axis=1) <= 1))
                layers.append(QLayer(f"{p}.shortcut", "conv", w_q, zeros, zeros.copy(), s, (0, 0), False, cur, res,
                                     in_frac=fr[cur], out_frac=fr[cur], w_frac=zeros.copy(), clip=not one_per_row))
            conv_layer(f"{p}.conv2", blk.conv2, blk.bn2, f"{p}.h", f"{p}.out", True, residual=res)
            cur = f"{p}.out"
    ci, _, _ = shapes[cur]
    shapes["pool"] = (ci, 1, 1)
    fr["pool"] = fr[cur]
    lin = model.linear
    wf, bf = fold_bn(lin, None)
    w_q, bias, shift, w_frac, _ = _requant("linear", wf, bf, fr["pool"], fr["logits"], per_channel)
    shapes["logits"] = (int(w_q.shape[0]), 1, 1)
    layers.append(QLayer("linear", "dense", w_q, bias, shift, (1, 1), (0, 0), False, "pool", "logits",
                         in_frac=fr["pool"], out_frac=fr["logits"], w_frac=w_frac))
    fracs = {k: fr[k] for k in shapes}
    return QNet(fr["input"], shapes["input"], layers, cur, shapes, fracs, per_channel)


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    return (int(v[0]), int(v[1]))


# --------------------------------------------------------------------------- numpy int8 reference
def host_quantise_input(x: torch.Tensor | np.ndarray, frac: int) -> np.ndarray:
    """Host step: float NCHW image(s) -> int8 at ``frac``."""
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return quantise(arr, frac)


def host_avgpool(x: np.ndarray) -> np.ndarray:
    """Host step: int8 (N, C, H, W) -> int8 (N, C, 1, 1), the integer mean rounded half-up."""
    n = x.shape[2] * x.shape[3]
    s = x.astype(np.int64).sum(axis=(2, 3), keepdims=True)
    return ((s + n // 2) // n).astype(np.int8)


def reference_conv(x: np.ndarray, w: np.ndarray, stride: tuple[int, int], padding: tuple[int, int]) -> np.ndarray:
    """Exact integer convolution: int8 (N, I, H, W) * int8 (O, I, KH, KW) -> int64 (N, O, OH, OW)."""
    _n, _, _, _ = x.shape
    _o, _i, kh, kw = w.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (padding[0], padding[0]), (padding[1], padding[1])))
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::stride[0], ::stride[1]]
    # products < 2**14 and sums < 2**40: float64 (BLAS) is exact here
    out = np.tensordot(win, w.astype(np.float64), axes=([1, 4, 5], [1, 2, 3]))  # N, OH, OW, O
    return np.rint(out).astype(np.int64).transpose(0, 3, 1, 2)


def reference_layer(layer: QLayer, x: np.ndarray, residual: np.ndarray | None = None) -> np.ndarray:
    """One layer in numpy integer arithmetic: int8 (N, I, H, W) -> int8 (N, O, OH, OW)."""
    acc = reference_conv(x, layer.weight, layer.stride, layer.padding)
    acc = wrap32(acc + layer.bias.astype(np.int64)[None, :, None, None])
    if layer.residual is not None:
        if residual is None:
            raise ValueError(f"{layer.name} needs its residual input")
        assert layer.res_shift is not None
        acc = wrap32(acc + shr(residual.astype(np.int64), layer.res_shift[None, :, None, None]))
    acc = shr(acc, layer.shift[None, :, None, None])
    if layer.relu:
        acc = np.maximum(acc, 0)
    if layer.clip:
        acc = np.clip(acc, -128, layer.clip_hi)
    return acc.astype(np.int8)  # low 8 bits, as the VTA output buffer keeps them


def reference_forward(qnet: QNet, x: torch.Tensor | np.ndarray, quantised: bool = False) -> dict[str, np.ndarray]:
    """Every tensor of the int8 network for input ``x`` (float NCHW, or int8 if ``quantised``)."""
    xq = np.asarray(x, np.int8) if quantised else host_quantise_input(x, qnet.input_frac)
    t: dict[str, np.ndarray] = {"input": xq}
    for layer in qnet.layers:
        if layer.input == "pool" and "pool" not in t:
            t["pool"] = host_avgpool(t[qnet.pool_input])
        t[layer.output] = reference_layer(layer, t[layer.input], t[layer.residual] if layer.residual else None)
    return t


def dequantise_logits(qnet: QNet, logits: np.ndarray) -> np.ndarray:
    """int8 logits -> float."""
    return logits.astype(np.float64) * 2.0 ** -qnet.logits_frac
