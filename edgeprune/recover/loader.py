"""Fine-tuning batches from a DataLoader or any re-iterable of ``(inputs, targets)`` batches.

The counterpart of :class:`~edgeprune.recover.augment.BatchLoader` (the numpy fast
path for decoded images) with the same interface (``steps``, ``epoch(skip)``,
``rng_state``), so one training loop serves both. Batches are used as the
iterable yields them: shuffling and augmentation are the loader's job.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from edgeprune.data.batch import batch_len
from edgeprune.errors import BadInput


class IterableLoader:
    """Batches of ``batches`` for fine-tuning, one pass per epoch.

    An epoch is one pass, cut to about ``max_images`` samples when given. With
    ``world`` processes, rank ``r`` takes batches ``r, r + world, ...`` of each
    pass (each rank sees 1/world of the batches; give every rank the same loader).
    """

    def __init__(self, batches: Iterable, max_images: int | None, rng: np.random.Generator,
                 rank: int = 0, world: int = 1) -> None:
        self.batches = batches
        self.rng = rng  # kept for the checkpoint format; a DataLoader shuffles with torch's generator
        self.rank, self.world = rank, world
        first = next(iter(batches), None)
        if first is None:
            raise BadInput("the training data yields no batches")
        if not (isinstance(first, (tuple, list)) and len(first) == 2):
            raise BadInput(f"training batches must be (inputs, targets) pairs, got {type(first).__name__}")
        self.batch_size = int(getattr(batches, "batch_size", None) or batch_len(first[0]))
        try:
            n_batches = len(batches)  # type: ignore[arg-type]
        except TypeError:
            n_batches = sum(1 for _ in batches)
        if max_images:
            n_batches = min(n_batches, max(1, -(-max_images // self.batch_size)))
        if n_batches < world:
            raise BadInput(f"{n_batches} training batch(es) cannot feed {world} processes")
        self.n_batches = n_batches
        self.steps = max(1, n_batches // world)
        self.per_epoch = self.steps * world * self.batch_size

    def rng_state(self) -> dict:
        """The generator's state (for the checkpoint format shared with ``BatchLoader``)."""
        return self.rng.bit_generator.state

    def set_rng_state(self, state: dict) -> None:
        """Restore :meth:`rng_state`."""
        self.rng.bit_generator.state = state

    def epoch(self, skip: int = 0) -> Iterator[tuple[Any, Any]]:
        """This rank's batches of one pass, starting after ``skip`` of them."""
        mine = itertools.islice(iter(self.batches), self.rank, self.steps * self.world, self.world)
        for i, (x, y) in enumerate(mine):
            if i >= skip:
                yield x, y
