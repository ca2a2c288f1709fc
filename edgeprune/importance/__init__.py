"""Channel importance: one function, criteria registered by name (``edgeprune importance --list``)."""
from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeprune.importance.base import CRITERIA, Criterion, Scores, run_criterion


def _load_all() -> None:
    for info in pkgutil.iter_modules(__path__):
        if info.name != "base":
            importlib.import_module(f"{__name__}.{info.name}")


def importance(model: nn.Module, data: Any, criterion: str = "taylor", graph: Any = None, batches: int = 8,
               batch_size: int = 64, seed: int = 0, loss_fn: Callable[[Any, Any], torch.Tensor] | None = None,
               **options: Any) -> Scores:
    """Score every channel of every prunable group of ``model`` (higher = more important).

    ``data`` is anything :func:`edgeprune.data.as_source` takes (an ``ImageSet``, a ``Dataset``
    (its train split is used), a DataLoader or a re-iterable of (inputs, targets) batches, a
    (train, val) pair, a DataSource), a list of (inputs, targets) batches (used as given), or None
    for data-free criteria. ``loss_fn(outputs, targets) -> scalar`` replaces cross-entropy in the
    gradient criteria.
    """
    from edgeprune.graph import channel_groups, example_input
    from edgeprune.importance.base import using_loss

    _load_all()
    batch_list = _batches(data, batches, batch_size)
    if graph is None:
        example = example_input(model, batch_list or None)
        graph = channel_groups(model, example)
    torch.manual_seed(seed)
    with using_loss(loss_fn):
        return run_criterion(criterion, model, graph, batch_list, seed=seed, **options)


def layer_sensitivity(model: nn.Module, data: Any, kind: str = "hessian-trace", **options: Any) -> dict[str, float]:
    """Per-layer sensitivity: ``hessian-trace``, ``spectral-radius`` or ``gradient-redundancy`` (see
    :func:`edgeprune.importance.sensitivity.layer_sensitivity`)."""
    from edgeprune.importance.sensitivity import layer_sensitivity as _ls

    return _ls(model, data, kind, **options)


def oracle(*args: Any, **kwargs: Any) -> Any:
    """Drop-one-channel oracle (see :func:`edgeprune.importance.oracle.oracle`)."""
    from edgeprune.importance.oracle import oracle as _oracle

    return _oracle(*args, **kwargs)


def list_criteria() -> list[tuple[str, Criterion, str]]:
    """(name, criterion, description) of every registered criterion."""
    _load_all()
    return [(e.name, e.obj, e.description) for e in CRITERIA]


def _batches(data: Any, n: int, bs: int) -> list[tuple[Any, Any]] | None:
    if data is None:
        return None
    if isinstance(data, list) and (not data or isinstance(data[0], (tuple, list))):
        return data
    from edgeprune.data import Dataset, ImageSet
    from edgeprune.data.source import as_source

    if isinstance(data, Dataset):
        data = data.train
    if isinstance(data, ImageSet):
        idx = np.sort(score_order(len(data))[: n * bs])
        return list(data.subset(idx).batches(bs))
    source = as_source(data)
    return source.score_batches(n, bs) if source is not None else None


def score_order(n: int) -> np.ndarray:
    """The fixed random order in which criteria take training images (the first ``batches * batch_size``).

    The oracle's ``split="train"`` takes its images from the *end* of the same
    order, so they never overlap the images the criteria were scored on.
    """
    return torch.randperm(n, generator=torch.Generator().manual_seed(0)).numpy()


__all__ = ["CRITERIA", "Criterion", "Scores", "importance", "layer_sensitivity", "list_criteria", "oracle"]

from edgeprune._callable import make_callable

make_callable(__name__, "importance")
