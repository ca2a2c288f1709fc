"""Which int8 layers to give back to fp32 when an int8 engine fails verification.

What NNCF's accuracy-aware quantisation (``quantize_with_accuracy_control``) does, on the engine's own
gate: rank the quantised layers by how far int8 on that layer alone moves the model's outputs, revert the
worst to fp32, rebuild, verify again. :func:`output_sensitivity` is the ranking: each layer's weights on
the engine's int8 grid (:func:`~edgeprune.quant.qat.quantize_weight`) and its input on a calibrated uint8
grid (ORT's asymmetric activations), one layer at a time, scored by the relative change of the outputs
against the float model's own outputs (no labels needed: the gate compares with PyTorch, not with labels).
Blind to interactions between layers, which is why the caller re-verifies after each step.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from edgeprune.data.batch import call_model, flat_outputs
from edgeprune.quant.qat import act_qparams, quantize_weight


def output_sensitivity(model: nn.Module, inputs: Any, layers: Sequence[str], *, reduce_range: bool = True,
                       per_channel: bool = True) -> dict[str, float]:
    """``{layer: mean |out_q - out| / mean |out|}`` with only that layer int8 (weights and input), on ``inputs``
    (a batch: tensor, tuple or dict). Layers without a weight tensor are skipped. The model is not modified."""
    model = copy.deepcopy(model).eval()
    mods = dict(model.named_modules())
    names = [n for n in layers if isinstance(getattr(mods.get(n), "weight", None), torch.Tensor)]
    ranges = {n: [math.inf, -math.inf] for n in names}

    def observe(name: str):
        def hook(_m: nn.Module, inp: tuple) -> None:
            r = ranges[name]
            r[0], r[1] = min(r[0], float(inp[0].min())), max(r[1], float(inp[0].max()))
        return hook

    hooks = [mods[n].register_forward_pre_hook(observe(n)) for n in names]
    with torch.no_grad():
        ref = flat_outputs(call_model(model, inputs)).float()
    for h in hooks:
        h.remove()
    scale_ref = float(ref.abs().mean()) or 1.0
    out: dict[str, float] = {}
    for n in names:
        m = mods[n]
        w = m.weight.data.clone()
        s, zp = act_qparams(*ranges[n])

        def fake_quant(_m: nn.Module, inp: tuple, s: float = s, zp: int = zp) -> tuple:
            return ((torch.clamp(torch.round(inp[0] / s) + zp, 0, 255) - zp) * s, *inp[1:])

        hook = m.register_forward_pre_hook(fake_quant)
        try:
            m.weight.data.copy_(quantize_weight(w, reduce_range, per_channel))
            with torch.no_grad():
                q = flat_outputs(call_model(model, inputs)).float()
            out[n] = float((q - ref).abs().mean()) / scale_ref
        finally:
            m.weight.data.copy_(w)
            hook.remove()
    return out


def revert_order(sensitivity: dict[str, float]) -> list[str]:
    """Layers, most output-disturbing first (ties by name, so a run is reproducible)."""
    return sorted(sensitivity, key=lambda n: (-sensitivity[n], n))


def revert_step(remaining_int8: int) -> int:
    """How many layers one step gives back: a quarter of those still int8 (at least one), so a model with
    a few bad layers loses few and a hopeless one reaches fp32 in a handful of rebuilds."""
    return max(1, math.ceil(remaining_int8 / 4))
