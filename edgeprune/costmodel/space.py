"""The kernel space a device model samples: kernel types, fusion rules, features and the random sampler.

A *kernel* is what the runtime executes as one unit. Which ops become one kernel
is the runtime's fusion rule (nn-Meter's idea): ORT folds BN into the conv and
fuses a following ReLU, and the residual Add + ReLU into a blocked (NCHWc) conv,
so ``conv2d`` with ``post="bn+add+relu"`` is one kernel there; an op the rule does
not fuse is priced as its own kernel (:func:`split_kernels`).
"""
from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgeprune.graph.signature import LayerSignature
from edgeprune.profile.layer_onnx import ACTIVATIONS

#: kernel types, one regressor each (per precision)
KERNEL_TYPES = ("conv", "conv1x1", "dwconv", "gconv", "linear", "pool", "se", "add", "act")

#: post-ops each backend fuses into a conv / linear kernel (the rest become kernels of their own)
FUSION_RULES: dict[str, frozenset[str]] = {
    "ort": frozenset({"bn", "relu", "add"}),
    "openvino": frozenset({"bn", "relu", "add"}),
    "tvm": frozenset({"bn", "relu", "add"}),
    "trt": frozenset({"bn", "relu", "add"}),
}
DEFAULT_FUSED = frozenset({"bn"})


def kernel_type(sig: LayerSignature) -> str:
    """The kernel type (one of :data:`KERNEL_TYPES`) of a signature."""
    if sig.op == "conv2d":
        if sig.groups == -1 or (sig.groups > 1 and sig.groups == sig.in_channels == sig.out_channels):
            return "dwconv"
        if sig.groups > 1:
            return "gconv"
        return "conv1x1" if tuple(sig.kernel) == (1, 1) else "conv"
    if sig.op == "linear":
        # a Linear over H x W positions is a 1x1 convolution's GEMM (channels last): priced as one
        return "linear" if tuple(sig.in_hw) == (1, 1) else "conv1x1"
    if sig.op in ("maxpool", "avgpool", "gap"):
        return "pool"
    if sig.op in ("se", "add", "act"):
        return sig.op
    raise ValueError(f"no kernel type for op {sig.op!r}")


def split_kernels(sig: LayerSignature, backend: str) -> list[LayerSignature]:
    """The kernels the runtime runs for ``sig`` under its fusion rule: the layer with its fused post-ops,
    then one ``add`` / ``act`` kernel per post-op it does not fuse."""
    if sig.op not in ("conv2d", "linear") or not sig.post:
        return [sig]
    fused = FUSION_RULES.get(backend, DEFAULT_FUSED)
    keep, extra = [], []
    oh, ow = sig.out_hw
    for p in sig.post.split("+"):
        if p in fused:
            keep.append(p)
        elif p == "add":
            extra.append(LayerSignature("add", sig.out_channels, sig.out_channels, in_hw=(oh, ow), dtype=sig.dtype))
        elif p in ACTIVATIONS:
            extra.append(LayerSignature("act", sig.out_channels, sig.out_channels, in_hw=(oh, ow), dtype=sig.dtype, post=p))
    main = LayerSignature(sig.op, sig.in_channels, sig.out_channels, sig.kernel, sig.stride, sig.padding, sig.groups,
                          sig.in_hw, sig.dtype, "+".join(keep))
    return [main, *extra]


# --------------------------------------------------------------------------- features

FEATURES = ("h", "w", "c_in", "c_out", "kernel", "stride", "groups", "c_in_up", "c_out_up", "in_aligned", "out_aligned",
            "macs", "bytes", "has_add", "has_relu", "act")
"""The regressor's inputs. ``c_*_up``: the count rounded up to the target multiple; ``*_aligned``: 1 when the
count is a multiple of it (the alignment class: on ORT an unaligned count runs up to 2x slower per MAC);
``bytes``: activations in + out plus weights, fp32 (the precision has its own regressor)."""

#: +1 where the feature grows with the channel counts (HistGradientBoosting monotonic_cst): the prediction is then
#: monotone in c_in and c_out within an alignment class (the aligned flags are the only unconstrained
#: channel-dependent features)
MONOTONE = {"c_in": 1, "c_out": 1, "c_in_up": 1, "c_out_up": 1, "macs": 1, "bytes": 1}

_ACT_CODE = {a: i + 1 for i, a in enumerate(ACTIVATIONS)}


def features(sig: LayerSignature, multiple: int) -> list[float]:
    """The :data:`FEATURES` vector of one kernel signature."""
    m = max(1, multiple)
    ci, co = sig.in_channels, sig.out_channels
    h, w = sig.in_hw
    oh, ow = sig.out_hw
    kind = kernel_type(sig)
    if sig.op == "linear" and kind == "conv1x1":  # T positions priced as a square 1x1 conv (what it was sampled as)
        h = w = oh = ow = math.sqrt(h * w)
    groups = 1 if sig.groups == -1 else sig.groups  # dwconv is its own type: groups would track the channels
    if kind in ("pool", "add", "act"):
        macs = oh * ow * co * (sig.kernel[0] * sig.kernel[1] if sig.op != "gap" else 1)
        weights = 0
        if sig.op == "gap":
            macs = h * w * ci
    elif kind == "se":
        macs = h * w * ci * 2 + 2 * ci * co
        weights = 2 * ci * co
    else:
        macs = sig.macs
        weights = macs // max(1, oh * ow)
    n_in = ci * h * w * (2 if kind == "add" else 1)
    post = set(sig.post.split("+")) if sig.post else set()
    act = _ACT_CODE.get(sig.post, 0) if kind == "act" else 0
    return [float(h), float(w), float(ci), float(co), float(sig.kernel[0]), float(sig.stride[0]), float(groups),
            float(math.ceil(ci / m) * m), float(math.ceil(co / m) * m), float(ci % m == 0), float(co % m == 0),
            float(macs), float(4 * (n_in + co * oh * ow + weights)), float("add" in post), float("relu" in post), float(act)]


def monotonic_cst() -> list[int]:
    """The HistGradientBoosting ``monotonic_cst`` over :data:`FEATURES`."""
    return [MONOTONE.get(f, 0) for f in FEATURES]


def alignment_class(sig: LayerSignature, multiple: int) -> tuple[bool, bool]:
    """(c_in aligned, c_out aligned): the classes within which the prediction is monotone in channels."""
    m = max(1, multiple)
    return sig.in_channels % m == 0, sig.out_channels % m == 0


# --------------------------------------------------------------------------- the sampler


@dataclass(frozen=True)
class SpaceConfig:
    """Ranges the sampler draws from (defaults: CNNs up to 224 px on a CPU)."""

    sizes: tuple[int, ...] = (4, 7, 8, 14, 16, 28, 32, 56, 64, 112, 224)
    max_channels: int = 1024
    max_macs: float = 2.5e8  # one sample must stay a few ms on a small CPU
    max_elems: float = 3.5e6  # activation elements in + out


def _channels(rng: random.Random, multiple: int, hi: int, aligned: bool | None = None) -> int:
    c = round(math.exp(rng.uniform(math.log(3), math.log(hi))))
    aligned = rng.random() < 0.6 if aligned is None else aligned
    if aligned and multiple > 1:
        return max(multiple, c // multiple * multiple)
    if multiple > 1 and c % multiple == 0:
        c -= 1
    return max(1, c)


def sample_kernel(kind: str, dtype: str, rng: random.Random, multiple: int, space: SpaceConfig = SpaceConfig()) -> LayerSignature:
    """One random kernel configuration of ``kind`` (resampled until it fits ``space``'s size limits)."""
    for _ in range(200):
        sig = _draw(kind, dtype, rng, multiple, space)
        oh, ow = sig.out_hw
        elems = sig.in_channels * sig.in_hw[0] * sig.in_hw[1] + sig.out_channels * oh * ow
        if oh >= 1 and ow >= 1 and sig.macs <= space.max_macs and elems <= space.max_elems:
            return sig
    return sig


def _draw(kind: str, dtype: str, rng: random.Random, m: int, space: SpaceConfig) -> LayerSignature:
    hw = rng.choice(space.sizes)
    hi = space.max_channels
    if kind in ("conv", "conv1x1"):
        k = 1 if kind == "conv1x1" else rng.choice((3, 3, 5, 7))
        s = rng.choice((1, 1, 2))
        post = rng.choice(("bn", "bn+relu", "bn+relu", "bn+add+relu")) if s == 1 else rng.choice(("bn", "bn+relu"))
        return LayerSignature("conv2d", _channels(rng, m, hi), _channels(rng, m, hi), (k, k), (s, s), (k // 2, k // 2), 1,
                              (hw, hw), dtype, post)
    if kind == "dwconv":
        k = rng.choice((3, 3, 5, 7))
        s = rng.choice((1, 2))
        c = _channels(rng, m, hi)
        return LayerSignature("conv2d", c, c, (k, k), (s, s), (k // 2, k // 2), -1, (hw, hw), dtype, rng.choice(("bn", "bn+relu")))
    if kind == "gconv":
        g = rng.choice((2, 4, 8))
        ci = max(1, _channels(rng, m, hi) // g) * g
        co = max(1, _channels(rng, m, hi) // g) * g
        k = rng.choice((1, 3))
        return LayerSignature("conv2d", ci, co, (k, k), (1, 1), (k // 2, k // 2), g, (hw, hw), dtype, rng.choice(("bn", "bn+relu")))
    if kind == "linear":
        return LayerSignature("linear", _channels(rng, m, 2048), _channels(rng, m, 2048), dtype=dtype, post=rng.choice(("", "relu")))
    if kind == "pool":
        op = rng.choice(("maxpool", "avgpool", "gap"))
        c = _channels(rng, m, hi)
        if op == "gap":
            return LayerSignature("gap", c, c, (hw, hw), (1, 1), (0, 0), -1, (hw, hw), dtype)
        k = rng.choice((2, 3))
        return LayerSignature(op, c, c, (k, k), (2, 2), (k // 2 if k == 3 else 0,) * 2, -1, (hw, hw), dtype)
    if kind == "se":
        c = _channels(rng, m, hi)
        return LayerSignature("se", c, max(1, c // rng.choice((4, 8, 16))), in_hw=(hw, hw), dtype=dtype)
    if kind == "add":
        c = _channels(rng, m, hi)
        return LayerSignature("add", c, c, in_hw=(hw, hw), dtype=dtype)
    if kind == "act":
        c = _channels(rng, m, hi)
        return LayerSignature("act", c, c, in_hw=(hw, hw), dtype=dtype, post=rng.choice(ACTIVATIONS))
    raise ValueError(f"unknown kernel type {kind!r} (known: {', '.join(KERNEL_TYPES)})")


def sample_round(counts: dict[tuple[str, str], int], rng: random.Random, multiple: int,
                 space: SpaceConfig = SpaceConfig(), skip: Sequence[str] = ()) -> list[LayerSignature]:
    """``counts[(kind, dtype)]`` new random configurations of each (no key twice, none in ``skip``)."""
    seen = set(skip)
    out = []
    for (kind, dtype), n in counts.items():
        got = tries = 0
        while got < n and tries < 20 * n + 20:
            tries += 1
            sig = sample_kernel(kind, dtype, rng, multiple, space)
            if sig.key() in seen:
                continue
            seen.add(sig.key())
            out.append(sig)
            got += 1
    return out


def feature_matrix(sigs: Sequence[LayerSignature], multiple: int) -> np.ndarray:
    """Rows of :func:`features`."""
    return np.array([features(s, multiple) for s in sigs], dtype=float).reshape(len(sigs), len(FEATURES))
