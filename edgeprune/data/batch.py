"""Model inputs as they come in batches: one tensor, a tuple of tensors (positional) or a dict (keywords).

Every place that runs a model on a batch, slices a batch or hands a batch to an
engine goes through these helpers, so a model with several inputs works
wherever a one-input model does.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

Inputs = Any  # torch.Tensor | tuple[torch.Tensor, ...] | dict[str, torch.Tensor]


def call_model(model: nn.Module | Any, inputs: Inputs) -> Any:
    """``model`` called on ``inputs``: a tuple/list is positional arguments, a dict keyword arguments."""
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    if isinstance(inputs, dict):
        return model(**inputs)
    return model(inputs)


def tensors_of(inputs: Inputs) -> list[torch.Tensor]:
    """The tensors of ``inputs`` in order (a dict in its key order)."""
    if isinstance(inputs, dict):
        return [v for v in inputs.values() if isinstance(v, torch.Tensor)]
    if isinstance(inputs, (tuple, list)):
        return [v for v in inputs if isinstance(v, torch.Tensor)]
    return [inputs] if isinstance(inputs, torch.Tensor) else []


def batch_len(inputs: Inputs) -> int:
    """Samples in a batch of ``inputs`` (the first dimension of its first tensor)."""
    ts = tensors_of(inputs)
    if not ts or ts[0].dim() == 0:
        raise ValueError(f"cannot tell the batch size of {type(inputs).__name__} inputs")
    return int(ts[0].shape[0])


def map_inputs(inputs: Inputs, fn: Any) -> Inputs:
    """``inputs`` with ``fn`` applied to each tensor (structure kept)."""
    if isinstance(inputs, dict):
        return {k: fn(v) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(fn(v) if isinstance(v, torch.Tensor) else v for v in inputs)
    return fn(inputs) if isinstance(inputs, torch.Tensor) else inputs


def take(inputs: Inputs, start: int, stop: int | None = None) -> Inputs:
    """Samples ``start:stop`` of every tensor in ``inputs`` (``take(x, 1)``: the first sample)."""
    lo, hi = (0, start) if stop is None else (start, stop)
    return map_inputs(inputs, lambda t: t[lo:hi])


def to_device(inputs: Inputs, device: torch.device | str) -> Inputs:
    """``inputs`` moved to ``device``."""
    return map_inputs(inputs, lambda t: t.to(device, non_blocking=True))


def concat(parts: Sequence[Inputs]) -> Inputs:
    """Batches of inputs with the same structure joined along the batch dimension."""
    first = parts[0]
    if isinstance(first, dict):
        return {k: torch.cat([p[k] for p in parts]) for k in first}
    if isinstance(first, (tuple, list)):
        return type(first)(torch.cat([p[i] for p in parts]) for i in range(len(first)))
    return torch.cat(list(parts))


def shapes_of(inputs: Inputs) -> str:
    """The shapes of ``inputs`` for a message: ``(1, 3, 32, 32)`` or ``(1, 3, 32, 32), (1, 8)``."""
    return ", ".join(str(tuple(t.shape)) for t in tensors_of(inputs))


def input_names(inputs: Inputs) -> list[str]:
    """ONNX input names for ``inputs``: ``input`` for one tensor, ``input0..`` for a tuple, the keys of a dict."""
    if isinstance(inputs, dict):
        return [str(k) for k in inputs]
    if isinstance(inputs, (tuple, list)):
        return [f"input{i}" for i in range(len(inputs))]
    return ["input"]


def to_numpy(inputs: Inputs) -> Any:
    """``inputs`` as float32 numpy arrays (same structure; numpy arrays pass through)."""
    def conv(t: Any) -> np.ndarray:
        a = t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
        return a.astype(np.float32) if a.dtype == np.float64 else a

    if isinstance(inputs, dict):
        return {k: conv(v) for k, v in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return tuple(conv(v) for v in inputs)
    return conv(inputs)


def feeds_for(names: Sequence[str], inputs: Any) -> dict[str, np.ndarray]:
    """An ONNX Runtime feed dict for a session whose inputs are ``names`` (in order)."""
    x = to_numpy(inputs)
    if isinstance(x, dict):
        missing = [n for n in names if n not in x]
        if missing:
            values = list(x.values())
            return dict(zip(names, values))  # exported from a dict in the same order
        return {n: x[n] for n in names}
    if isinstance(x, tuple):
        return dict(zip(names, x))
    return {names[0]: x.astype(np.float32) if x.dtype.kind == "f" else x}


def output_tensors(outputs: Any) -> list[torch.Tensor]:
    """Every tensor in a model's output (a tensor, a tuple/list or a dict, nested), in order."""
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    if isinstance(outputs, dict):
        return [t for v in outputs.values() for t in output_tensors(v)]
    if isinstance(outputs, (tuple, list)):
        return [t for v in outputs for t in output_tensors(v)]
    return []


def flat_outputs(outputs: Any) -> torch.Tensor:
    """A model's outputs flattened per sample and joined: ``(batch, total values)``."""
    ts = output_tensors(outputs)
    return torch.cat([t.reshape(t.shape[0], -1).float() for t in ts], 1)


__all__ = ["Inputs", "batch_len", "calibration_arrays", "call_model", "concat", "feeds_for", "flat_outputs", "input_names", "map_inputs",
           "output_tensors", "shapes_of", "take", "tensors_of", "to_device", "to_numpy"]


def calibration_arrays(calib: Any) -> Any:
    """Calibration inputs as int8 quantisers take them: None, one NCHW array, or ``{ONNX input name: array}``
    for a multi-input model (names as :func:`input_names` gives them at export)."""
    if calib is None or isinstance(calib, np.ndarray):
        return calib
    if isinstance(calib, (tuple, list, dict)):
        return dict(zip(input_names(calib), to_numpy(tensors_of(calib))))
    return to_numpy(calib)
