"""Model figures: parameters, MACs, bytes, top-1 accuracy."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

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
    """Multiply-accumulates of one forward pass on the first sample of ``example`` (a tensor, or a tuple/dict of
    inputs; conv and linear layers)."""
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
    from edgeprune.data.batch import call_model, take

    try:
        with torch.no_grad():
            call_model(model.eval(), take(example, 1))
    finally:
        for h in hooks:
            h.remove()
    return int(total)


class EngineModel:
    """A compiled engine called like the PyTorch model: inputs in (tensor, positional or keyword), torch
    outputs out (one tensor, or a tuple for several outputs). What ``eval_fn`` gets for an engine."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the engine on one batch."""
        x = kwargs if kwargs else (args[0] if len(args) == 1 else tuple(args))
        if hasattr(self.engine, "outputs"):
            raw = self.engine.outputs(x)
        else:  # anything with run(x) -> logits
            from edgeprune.data.batch import to_numpy

            raw = [self.engine.run(to_numpy(x))]
        outs = [torch.as_tensor(o) for o in raw]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def eval(self) -> EngineModel:
        """No-op (an engine has no training mode)."""
        return self

    def train(self, mode: bool = True) -> EngineModel:
        """No-op (an engine has no training mode)."""
        return self


def as_model(model: nn.Module | Any) -> Any:
    """``model`` in eval mode, or an engine (anything with ``outputs``/``run``) wrapped as :class:`EngineModel`."""
    if isinstance(model, nn.Module):
        return model.eval()
    return EngineModel(model)


def metric_name(eval_fn: Any) -> str:
    """The name a metric is reported under: ``eval_fn.name`` if set, else its ``__name__`` ("top1" without one)."""
    if eval_fn is None:
        return "top1"
    return str(getattr(eval_fn, "name", None) or getattr(eval_fn, "__name__", None) or type(eval_fn).__name__)


@torch.no_grad()
def evaluate(model: nn.Module | Any, data: Any, limit: int | None = None, batch_size: int = 500,
             eval_fn: Any = None, device: torch.device | str | None = None) -> float:
    """Top-1 accuracy in percent on ``data`` (first ``limit`` samples), or ``eval_fn(model, val_batches)``.

    ``model`` is a PyTorch module or a compiled engine (anything with ``outputs(x)``,
    such as :class:`edgeprune.backends.Engine`): an int8 engine's accuracy is the one that ships.
    ``data`` is an ``ImageSet`` (all of it), or anything :func:`edgeprune.data.as_source` takes
    (its validation batches). ``eval_fn(model, batches) -> float`` (higher is better) replaces
    top-1: it gets the model (an engine wrapped to be called like one) and an iterable of
    ``(inputs, targets)`` validation batches. ``device``: where a module runs (default: the CPU
    for batches, which are moved there).
    """
    from edgeprune.data import ImageSet
    from edgeprune.data.batch import call_model, to_device
    from edgeprune.data.source import as_source

    run = as_model(model)
    if isinstance(data, ImageSet):
        batches = data.batches(batch_size, limit)
    else:
        src = as_source(data)
        if src is None:
            raise ValueError("evaluate needs data")
        batches = src.val_batches(limit, batch_size)
    if device is not None and isinstance(model, nn.Module):
        batches = ((to_device(x, device), to_device(y, device)) for x, y in batches)
    if eval_fn is not None:
        return float(eval_fn(run, batches))
    correct = n = 0
    for x, y in batches:
        out = call_model(run, x)
        correct += int((out.argmax(1).cpu() == torch.as_tensor(y).cpu()).sum())
        n += len(y)
    return 100.0 * correct / max(n, 1)
