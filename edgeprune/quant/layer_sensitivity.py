"""Per-layer int8 sensitivity: the planner's cost of putting one layer in int8.

Two estimates, both in units of *training-loss increase* so they can be
compared with each other and with pruning costs:

* ``hawq`` (HAWQ-V2/V3, Dong et al. 2020, Yao et al. 2021):
  ``0.5 * Tr(H_l) / n_l * ||W_l - Q(W_l)||^2``, the second-order Taylor
  estimate of the loss change under an isotropic-Hessian approximation. The
  trace of each layer's Hessian block is estimated with Hutchinson's method
  (``E[v^T H v]`` over Rademacher ``v``), one Hessian-vector product per
  probe giving every layer's trace at once.
* ``measured``: fake-quantise one layer at a time (its weights, and with
  ``activations=True`` its input too) and measure the cross-entropy change on
  the calibration batches. Exact for one layer alone, blind to interactions;
  can be slightly negative (quantisation noise that happens to help).

``Q`` is the engine's weight quantiser (:func:`edgeprune.quant.qat.quantize_weight`:
per-channel symmetric, 7-bit with ``reduce_range``). Weights only by default,
because in ONNX Runtime's QDQ graph the activations between quantised
layers are quantised whether or not a given layer is (DESIGN.md /
docs/quant.md).
"""
from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgeprune.errors import BadInput
from edgeprune.quant.qat import act_qparams, quantize_weight

KINDS = ("hawq", "measured")


def quant_layers(model: nn.Module) -> list[str]:
    """Names of the layers the engine quantises: every Conv and Linear module."""
    return [n for n, m in model.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))]


def _batches(data: Any, batches: int, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out: list[tuple[torch.Tensor, torch.Tensor]] = []
    if hasattr(data, "train") and hasattr(data.train, "batches"):
        data = data.train
    if hasattr(data, "batches") and callable(data.batches):
        it: Iterable[Any] = data.batches(batch_size, limit=batches * batch_size)
    elif isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        x, y = data
        it = [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    else:
        it = data
    for item in it:
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise BadInput("sensitivity needs labelled data: an ImageSet, a Dataset, (x, y) tensors or (x, y) batches")
        out.append((torch.as_tensor(item[0], dtype=torch.float32), torch.as_tensor(item[1], dtype=torch.long)))
        if len(out) >= batches:
            break
    if not out:
        raise BadInput("sensitivity: no data")
    return out


def sensitivity(
    model: nn.Module,
    data: Any,
    kind: str = "hawq",
    layers: Sequence[str] | None = None,
    batches: int = 4,
    *,
    batch_size: int = 64,
    probes: int = 8,
    reduce_range: bool = True,
    per_channel: bool = True,
    activations: bool = False,
    seed: int = 0,
) -> dict[str, float]:
    """``{layer: estimated loss increase when that layer is int8}`` (see module doc).

    ``data``: ImageSet or Dataset (its train split), ``(x, y)`` tensors, or an
    iterable of ``(x, y)`` batches; ``batches`` batches of ``batch_size`` are used.
    ``layers``: module names (default: every Conv/Linear). ``probes``:
    Hutchinson samples per batch (``hawq``). The model is not modified.
    """
    if kind not in KINDS:
        raise BadInput(f"unknown sensitivity kind {kind!r} (known: {', '.join(KINDS)})")
    model = copy.deepcopy(model).eval()
    mods = dict(model.named_modules())
    names = list(layers) if layers is not None else quant_layers(model)
    bad = [n for n in names if n not in mods or not isinstance(getattr(mods[n], "weight", None), torch.Tensor)]
    if bad:
        raise BadInput(f"sensitivity: {', '.join(map(repr, bad))} is not a layer with weights (e.g. {', '.join(quant_layers(model)[:5])})")
    if not names:
        return {}
    data_b = _batches(data, batches, batch_size)
    if kind == "hawq":
        return _hawq(model, mods, names, data_b, probes, reduce_range, per_channel, seed)
    return _measured(model, mods, names, data_b, reduce_range, per_channel, activations)


def _hawq(model: nn.Module, mods: dict[str, nn.Module], names: list[str], data: list, probes: int, reduce_range: bool, per_channel: bool, seed: int) -> dict[str, float]:
    for p in model.parameters():
        p.requires_grad_(False)
    params = [mods[n].weight for n in names]
    for p in params:
        p.requires_grad_(True)
    gen = torch.Generator().manual_seed(seed)
    trace = [0.0] * len(names)
    count = 0
    for x, y in data:
        loss = F.cross_entropy(model(x), y)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        for k in range(probes):
            vs = [torch.randint(0, 2, p.shape, generator=gen).to(p.dtype) * 2 - 1 for p in params]
            hv = torch.autograd.grad(grads, params, grad_outputs=vs, retain_graph=k < probes - 1)
            for i, (v, h) in enumerate(zip(vs, hv)):
                trace[i] += float((v * h).sum())
            count += 1
    out = {}
    with torch.no_grad():
        for i, n in enumerate(names):
            w = mods[n].weight
            err = float(((quantize_weight(w, reduce_range, per_channel) - w) ** 2).sum())
            out[n] = 0.5 * (trace[i] / count) / w.numel() * err
    return out


@torch.no_grad()
def _measured(model: nn.Module, mods: dict[str, nn.Module], names: list[str], data: list, reduce_range: bool, per_channel: bool, activations: bool) -> dict[str, float]:
    def loss() -> float:
        total = n = 0.0
        for x, y in data:
            total += float(F.cross_entropy(model(x), y, reduction="sum"))
            n += len(y)
        return total / n

    ranges: dict[str, list[float]] = {}
    if activations:
        hooks = []
        for n in names:
            ranges[n] = [math.inf, -math.inf]

            def obs(m: nn.Module, inp: tuple, n: str = n) -> None:
                r = ranges[n]
                r[0], r[1] = min(r[0], float(inp[0].min())), max(r[1], float(inp[0].max()))

            hooks.append(mods[n].register_forward_pre_hook(obs))
        base = loss()
        for h in hooks:
            h.remove()
    else:
        base = loss()
    out = {}
    for n in names:
        m = mods[n]
        w = m.weight.data.clone()
        m.weight.data.copy_(quantize_weight(w, reduce_range, per_channel))
        hook = None
        if activations:
            scale, zp = act_qparams(*ranges[n])

            def fq(mod: nn.Module, inp: tuple, scale: float = scale, zp: int = zp) -> tuple:
                return ((torch.clamp(torch.round(inp[0] / scale) + zp, 0, 255) - zp) * scale,)

            hook = m.register_forward_pre_hook(fq)
        try:
            out[n] = loss() - base
        finally:
            m.weight.data.copy_(w)
            if hook is not None:
                hook.remove()
    return out


__all__ = ["KINDS", "quant_layers", "sensitivity"]
