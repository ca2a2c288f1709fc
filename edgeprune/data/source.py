"""One data adapter for every consumer: :class:`DataSource` and :func:`as_source`.

Importance scoring, int8 calibration, recovery (fine-tuning + KD), evaluation and
verification all take a :class:`DataSource`. It wraps either

- the fast path, an edgeprune :class:`~edgeprune.data.Dataset` (decoded uint8
  images: numpy augmentation and a prefetching :class:`~edgeprune.recover.augment.BatchLoader`), or
- any re-iterable of ``(inputs, targets)`` batches: a torch ``DataLoader``, a list
  of batches, or an object whose ``__iter__`` starts afresh each time. ``inputs``
  is a tensor, a tuple of tensors (positional model inputs) or a dict (keyword
  inputs); ``targets`` is whatever the loss takes (class indices for the default
  cross-entropy).

``as_source`` accepts all of these, a ``(train, val)`` pair of them, and the string
specs of :func:`~edgeprune.data.load_data`. A one-shot generator is refused: every
consumer iterates the data again.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from edgeprune.data import Dataset, ImageSet, load_data
from edgeprune.data.batch import Inputs, batch_len, concat, take
from edgeprune.errors import BadInput

Batch = tuple[Inputs, Any]


@dataclass
class DataSource:
    """Training and validation batches for one run (see the module docstring).

    ``dataset`` is set on the fast path (then ``train``/``val`` are None); otherwise
    ``train`` and ``val`` are re-iterables of ``(inputs, targets)`` batches (the same
    object when only one was given).
    """

    name: str = "data"
    dataset: Dataset | None = None
    train: Iterable | None = None
    val: Iterable | None = None

    @property
    def fast(self) -> bool:
        """Whether this is the decoded-image fast path (an edgeprune ``Dataset``)."""
        return self.dataset is not None

    @property
    def same_split(self) -> bool:
        """True when one iterable serves as both train and val (then evaluation is on training data)."""
        return not self.fast and self.train is self.val

    # ------------------------------------------------------------------ batches

    def train_batches(self) -> Iterator[Batch]:
        """The training batches, one pass (on the fast path: normalised, in order, batch 128)."""
        if self.dataset is not None:
            return self.dataset.train.batches(128)
        return iter(self.train)  # type: ignore[arg-type]

    def val_batches(self, limit: int | None = None, batch_size: int = 250) -> Iterator[Batch]:
        """Validation batches covering at most ``limit`` samples (the last batch is cut to fit)."""
        if self.dataset is not None:
            yield from self.dataset.test.batches(batch_size, limit)
            return
        seen = 0
        for x, y in self.val:  # type: ignore[union-attr]
            if limit is not None and seen >= limit:
                return
            n = batch_len(x)
            if limit is not None and seen + n > limit:
                k = limit - seen
                x, y = take(x, k), (y[:k] if hasattr(y, "__getitem__") else y)
                n = k
            seen += n
            yield x, y

    def score_batches(self, batches: int, batch_size: int) -> list[Batch]:
        """The batches importance criteria score on: ``batches`` of them, from the training data.

        On the fast path: ``batches * batch_size`` images in the fixed random order of
        :func:`edgeprune.importance.score_order`; otherwise the first ``batches``
        batches of the training iterable (as the loader yields them).
        """
        if self.dataset is not None:
            import numpy as np

            from edgeprune.importance import score_order

            tr = self.dataset.train
            idx = np.sort(score_order(len(tr))[: batches * batch_size])
            return list(tr.subset(idx).batches(batch_size))
        return list(itertools.islice(iter(self.train), batches))  # type: ignore[arg-type]

    def example(self) -> Inputs:
        """One sample as a batch of one (validation data first): the example input for tracing and export."""
        if self.dataset is not None:
            return self.dataset.test.example(1) if len(self.dataset.test) else self.dataset.train.example(1)
        for it in (self.val, self.train):
            for x, _y in it:  # type: ignore[union-attr]
                return take(x, 1)
        raise BadInput(f"data {self.name} yields no batches")

    def calibration(self, n: int = 256, seed: int = 0) -> Inputs:
        """About ``n`` training inputs for int8 calibration: drawn at random on the fast path, else the first
        batches the training iterable yields (shuffle it for a fair sample)."""
        if self.dataset is not None:
            return self.dataset.train.sample(n, seed)
        parts, got = [], 0
        for x, _y in self.train:  # type: ignore[union-attr]
            parts.append(x)
            got += batch_len(x)
            if got >= n:
                break
        if not parts:
            raise BadInput(f"data {self.name} yields no training batches")
        return take(concat(parts), n)

    # ------------------------------------------------------------------ facts

    def train_size(self) -> int | None:
        """Training samples when known without iterating (the fast path, or a loader over a sized dataset)."""
        if self.dataset is not None:
            return len(self.dataset.train)
        ds = getattr(self.train, "dataset", None)
        try:
            return len(ds) if ds is not None else None  # type: ignore[arg-type]
        except TypeError:
            return None

    def num_classes(self) -> int | None:
        """The number of classes when the data says so (class names, or a sized label set), else None."""
        if self.dataset is not None:
            return self.dataset.num_classes
        for it in (self.train, self.val):
            ds = getattr(it, "dataset", None)
            classes = getattr(ds, "classes", None) if ds is not None else None
            if classes:
                return len(classes)
        return None

    def max_label(self, batches: int = 8) -> int | None:
        """The largest integer class label in the first ``batches`` batches of each split (None: no integer labels)."""
        if self.dataset is not None:
            ls = [s.labels for s in (self.dataset.train, self.dataset.test) if len(s)]
            return max(int(x.max()) for x in ls) if ls else None
        best = None
        for it in {id(self.train): self.train, id(self.val): self.val}.values():
            for _x, y in itertools.islice(iter(it), batches):  # type: ignore[arg-type]
                if not (isinstance(y, torch.Tensor) and y.dim() == 1 and not y.is_floating_point() and len(y)):
                    return None
                best = max(best or 0, int(y.max()))
        return best


def _is_batch(obj: Any) -> bool:
    """Whether ``obj`` looks like one ``(inputs, targets)`` batch rather than a pair of datasets."""
    return isinstance(obj, (tuple, list)) and len(obj) == 2 and isinstance(obj[0], (torch.Tensor, dict))


def _iterable(obj: Any, what: str) -> Iterable:
    """``obj`` as a re-iterable of batches, or a one-line BadInput."""
    if isinstance(obj, (torch.Tensor, str, bytes)) or not isinstance(obj, Iterable):
        raise BadInput(f"{what}: expected a DataLoader or an iterable of (inputs, targets) batches, "
                       f"got {type(obj).__name__}")
    if isinstance(obj, Iterator):  # iter(obj) is obj: a generator or an iterator runs once
        raise BadInput(f"{what}: a one-shot {type(obj).__name__} cannot be iterated again; pass a DataLoader, a list of "
                       "batches or an object whose __iter__ starts afresh")
    return obj


def _split(obj: Any, what: str) -> tuple[ImageSet | None, Iterable | None]:
    if isinstance(obj, Dataset):
        raise BadInput(f"{what}: give an ImageSet or a DataLoader here, not a whole Dataset")
    if isinstance(obj, ImageSet):
        return obj, None
    return None, _iterable(obj, what)


def as_source(data: Any, name: str | None = None) -> DataSource | None:
    """``data`` as a :class:`DataSource` (None stays None).

    Accepts a DataSource, a :func:`~edgeprune.data.load_data` spec (``cifar10-demo``,
    an ``.npz``, a folder), an edgeprune ``Dataset`` or ``ImageSet`` (the fast path;
    an ImageSet alone serves as both splits), a torch ``DataLoader`` or any
    re-iterable of ``(inputs, targets)`` batches (both splits), or a ``(train, val)``
    pair of ImageSets or of iterables.
    """
    if data is None or isinstance(data, DataSource):
        return data
    if isinstance(data, (str, Dataset)):
        ds = load_data(data)
        return DataSource(name or ds.name, dataset=ds)
    if isinstance(data, ImageSet):
        return DataSource(name or "images", dataset=Dataset(name or "images", data, data))
    if isinstance(data, tuple) and len(data) == 2 and not _is_batch(data):
        (tr_set, tr), (va_set, va) = _split(data[0], "train data"), _split(data[1], "validation data")
        if tr_set is not None and va_set is not None:
            return DataSource(name or "images", dataset=Dataset(name or "images", tr_set, va_set))
        if tr_set is not None or va_set is not None:
            raise BadInput("a (train, val) pair must be two ImageSets or two DataLoaders/iterables, not one of each")
        return DataSource(name or _name_of(tr), train=tr, val=va)
    it = _iterable(data, "data")
    return DataSource(name or _name_of(it), train=it, val=it)


def _name_of(obj: Any) -> str:
    ds = getattr(obj, "dataset", None)
    return type(ds).__name__ if ds is not None else type(obj).__name__


__all__ = ["DataSource", "as_source"]
