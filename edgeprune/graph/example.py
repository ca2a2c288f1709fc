"""The one builder of an example input (for tracing, export, profiling and verification)."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from edgeprune.errors import BadInput

_GUESS_SIZE = 32  # spatial size guessed for a conv model (the CIFAR models the zoo ships)


def example_input(model: nn.Module | None = None, data: Any = None, shape: Sequence[int] | None = None) -> Any:
    """One example input for ``model``, from the first source that is given.

    1. ``data``: an edgeprune ``Dataset`` (its test split's first image), an
       ``ImageSet`` (its first image), a ``DataSource`` (its example) or an iterable
       of ``(inputs, targets)`` batches (the first sample of the first batch; a tuple
       or dict of tensors for a multi-input model);
    2. ``shape``: a tensor of that shape, standard normal with a fixed seed
       (the same tensor every call);
    3. ``model``: guessed from its first layer: ``(1, C, 32, 32)`` zeros for a
       conv model with ``C`` input channels, ``(1, F)`` zeros for a linear one.

    Otherwise raises :class:`BadInput` asking for data or an input shape.
    Pass ``model=None`` where the input size changes what is measured: then
    nothing is guessed. An iterator given as ``data`` is advanced by one batch.
    """
    if data is not None:
        return _from_data(data)
    if shape is not None:
        dims = tuple(int(s) for s in shape)
        if not dims or any(s < 1 for s in dims):
            raise BadInput(f"input shape must be positive integers, got {tuple(shape)}")
        return torch.randn(*dims, generator=torch.Generator().manual_seed(0))
    if model is not None:
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                return torch.zeros(1, m.in_channels, _GUESS_SIZE, _GUESS_SIZE)
            if isinstance(m, nn.Linear):
                return torch.zeros(1, m.in_features)
    raise BadInput("cannot build an example input: give data or an input shape (e.g. --input-shape 1,3,32,32)")


def _from_data(data: Any) -> Any:
    """The first sample of ``data`` as a batch of one (a tensor, or a tuple/dict for a multi-input model)."""
    from edgeprune.data.batch import take
    from edgeprune.data.source import DataSource

    if isinstance(data, DataSource):
        return data.example()
    test = getattr(data, "test", None)
    if test is not None and hasattr(test, "example"):
        return test.example(1)
    if hasattr(data, "example"):
        return data.example(1)
    if isinstance(data, torch.Tensor):
        return data[:1]
    if isinstance(data, (tuple, dict)) and _is_inputs(data):
        return take(data, 1)
    if isinstance(data, Iterable):
        for batch in data:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            if _is_inputs(x):
                return take(x, 1)
            break
    raise BadInput(f"cannot take an example input from {type(data).__name__}: expected a Dataset, an ImageSet, "
                   "a DataLoader or (inputs, targets) batches")


def _is_inputs(x: Any) -> bool:
    """A non-empty batch of inputs: a tensor, or a tuple/dict of tensors."""
    if isinstance(x, torch.Tensor):
        return x.dim() >= 1 and len(x) > 0
    if isinstance(x, dict):
        return bool(x) and all(isinstance(v, torch.Tensor) and v.dim() >= 1 and len(v) > 0 for v in x.values())
    if isinstance(x, tuple):
        return bool(x) and all(isinstance(v, torch.Tensor) and v.dim() >= 1 and len(v) > 0 for v in x)
    return False
