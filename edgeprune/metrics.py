"""Model figures: parameters, MACs, bytes, top-1 accuracy."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edgeprune.data import ImageSet

WEIGHT_BITS = {"fp32": 32, "fp16": 16, "int8": 8, "int4": 4}
ACT_BYTES = {"fp32": 4.0, "fp16": 2.0, "int8": 1.0, "int4": 1.0}
_PREC_ORDER = ("fp32", "fp16", "int8", "int4")


def sort_precisions(precisions: Any) -> list[str]:
    """Precisions in a stable order, widest first (duplicates dropped)."""
    return sorted(set(precisions), key=lambda p: _PREC_ORDER.index(p) if p in _PREC_ORDER else 99)


def weight_count(sig: Any) -> int:
    """Weights of a conv/linear layer at signature ``sig`` (no bias)."""
    groups = sig.in_channels if sig.groups == -1 else max(sig.groups, 1)
    return sig.out_channels * (sig.in_channels // groups) * sig.kernel[0] * sig.kernel[1]


def weight_bytes(sig: Any) -> float:
    """Stored bytes of a layer's weight tensor at its precision (as :func:`model_bytes` counts it)."""
    return float(weight_count(sig) * WEIGHT_BITS.get(sig.dtype, 32) // 8)


def layer_macs(sig: Any) -> float:
    """MACs of one layer at signature ``sig`` (as :func:`count_macs` counts them)."""
    return float(sig.macs)


def activation_bytes(sig: Any) -> float:
    """The peak-memory proxy of one layer: input + output (+ residual operand) activations, batch 1."""
    ih, iw = sig.in_hw
    oh, ow = sig.out_hw
    out = sig.out_channels * oh * ow
    if "add" in sig.post.split("+"):
        out *= 2
    return (sig.in_channels * ih * iw + out) * ACT_BYTES.get(sig.dtype, 4.0)


def count_params(model: nn.Module) -> int:
    """Number of trainable and frozen parameters (buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


def model_bytes(model: nn.Module, bits: dict[str, int] | None = None) -> int:
    """Stored size of the weights: 4 bytes per fp32 parameter, or ``bits[layer]/8`` per weight of a layer."""
    bits = bits or {}
    total = 0
    for name, mod in model.named_modules():
        for pname, p in mod.named_parameters(recurse=False):
            b = bits.get(name, 32) if pname == "weight" else 32
            total += p.numel() * b // 8
    return total


def count_macs(model: nn.Module, example: Any) -> int:
    """Multiply-accumulates of one forward pass on ``example`` (conv and linear layers)."""
    total = 0

    def conv_hook(m: nn.Conv2d, inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() // out.shape[0] * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def linear_hook(m: nn.Linear, inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() // out.shape[0] * m.in_features

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
    try:
        with torch.no_grad():
            model.eval()(example[:1] if isinstance(example, torch.Tensor) else example)
    finally:
        for h in hooks:
            h.remove()
    return int(total)


@torch.no_grad()
def evaluate(model: nn.Module | Any, data: ImageSet, limit: int | None = None, batch_size: int = 500) -> float:
    """Top-1 accuracy in percent on ``data`` (first ``limit`` images).

    ``model`` is a PyTorch module or a compiled engine (anything with ``run(x) -> logits``,
    such as :class:`edgeprune.backends.Engine`): an int8 engine's accuracy is the one that ships.
    """
    if isinstance(model, nn.Module):
        model.eval()
        run = model
    else:
        def run(x: torch.Tensor) -> torch.Tensor:
            return torch.as_tensor(model.run(x.numpy()))
    correct = n = 0
    with torch.no_grad():
        for x, y in data.batches(batch_size, limit):
            correct += int((run(x).argmax(1) == y).sum())
            n += len(y)
    return 100.0 * correct / max(n, 1)
