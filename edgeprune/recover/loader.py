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


def shard_loader(loader: Any, rank: int, world: int, seed: int = 0) -> Any | None:
    """``loader`` rebuilt to read only rank ``rank``'s share of its dataset (a ``DistributedSampler``), or None.

    Possible for a torch ``DataLoader`` over a map-style dataset with a plain sequential or random sampler
    and no custom batch sampler: the copy keeps its batch size, workers, collate function and ``drop_last``,
    shuffles when the original did (the same order on every rank, a new one each epoch), and every rank gets
    the same number of batches. Anything else (an ``IterableDataset``, a weighted or custom sampler, a plain
    iterable of batches) gives None: the caller then takes every ``world``-th batch.
    """
    from torch.utils.data import BatchSampler, DataLoader, IterableDataset, RandomSampler, SequentialSampler
    from torch.utils.data.distributed import DistributedSampler

    if not isinstance(loader, DataLoader) or isinstance(loader.dataset, IterableDataset):
        return None
    if loader.batch_size is None or type(loader.batch_sampler) is not BatchSampler:
        return None
    if type(loader.sampler) not in (RandomSampler, SequentialSampler):
        return None
    if isinstance(loader.sampler, RandomSampler) and (loader.sampler.replacement or loader.sampler._num_samples is not None):
        return None
    shuffle = isinstance(loader.sampler, RandomSampler)
    sampler = DistributedSampler(loader.dataset, num_replicas=world, rank=rank, shuffle=shuffle, seed=seed,
                                 drop_last=loader.drop_last)
    extra = {"prefetch_factor": loader.prefetch_factor} if loader.num_workers > 0 else {}
    return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler, num_workers=loader.num_workers,
                      collate_fn=loader.collate_fn, pin_memory=loader.pin_memory, drop_last=loader.drop_last,
                      timeout=loader.timeout, worker_init_fn=loader.worker_init_fn,
                      multiprocessing_context=loader.multiprocessing_context, generator=loader.generator,
                      persistent_workers=loader.persistent_workers, **extra)


class IterableLoader:
    """Batches of ``batches`` for fine-tuning, one pass per epoch.

    An epoch is one pass, cut to about ``max_images`` samples when given. With
    ``world`` processes, a DataLoader that :func:`shard_loader` can rebuild reads
    only this rank's share of the dataset (a ``DistributedSampler``); otherwise rank
    ``r`` takes batches ``r, r + world, ...`` of each pass (each rank sees 1/world of
    the batches but loads them all; give every rank the same loader). ``ui`` gets a
    note saying which. Either way a step is ``world`` loader batches.
    """

    def __init__(self, batches: Iterable, max_images: int | None, rng: np.random.Generator,
                 rank: int = 0, world: int = 1, ui: Any = None) -> None:
        self.rng = rng  # kept for the checkpoint format; a DataLoader shuffles with torch's generator
        self.rank, self.world = rank, world
        self.sharded = shard_loader(batches, rank, world) if world > 1 else None
        if world > 1 and ui is not None:
            ui.log(f"  each of {world} processes reads its share of the data (DistributedSampler)" if self.sharded is not None
                   else f"  note: this data cannot take a DistributedSampler (not a DataLoader over a map-style dataset "
                        f"with a plain sampler): each of {world} processes loads every batch and trains on every "
                        f"{world}-th one")
        self.batches = self.sharded if self.sharded is not None else batches
        first = next(iter(batches), None)
        if first is None:
            raise BadInput("the training data yields no batches")
        if not (isinstance(first, (tuple, list)) and len(first) == 2):
            raise BadInput(f"training batches must be (inputs, targets) pairs, got {type(first).__name__}")
        self.batch_size = int(getattr(batches, "batch_size", None) or batch_len(first[0]))
        if self.sharded is not None:  # len() is this rank's batches, the same on every rank
            steps = len(self.sharded)
            if max_images:
                steps = min(steps, max(1, -(-max_images // (self.batch_size * world))))
            if steps < 1:
                raise BadInput(f"the training data cannot feed {world} processes a batch each")
            self.n_batches = steps * world
        else:
            try:
                n_batches = len(batches)  # type: ignore[arg-type]
            except TypeError:
                n_batches = sum(1 for _ in batches)
            if max_images:
                n_batches = min(n_batches, max(1, -(-max_images // self.batch_size)))
            if n_batches < world:
                raise BadInput(f"{n_batches} training batch(es) cannot feed {world} processes")
            self.n_batches = n_batches
        self.steps = max(1, self.n_batches // world)
        self.per_epoch = self.steps * world * self.batch_size

    def rng_state(self) -> dict:
        """The generator's state (for the checkpoint format shared with ``BatchLoader``)."""
        return self.rng.bit_generator.state

    def set_rng_state(self, state: dict) -> None:
        """Restore :meth:`rng_state`."""
        self.rng.bit_generator.state = state

    def epoch(self, skip: int = 0) -> Iterator[tuple[Any, Any]]:
        """This rank's batches of one pass, starting after ``skip`` of them."""
        if self.sharded is not None:
            # a new shuffle each pass, the same on every rank (their generators agree), resumable with the rng state
            self.sharded.sampler.set_epoch(int(self.rng.integers(2**31)))
            mine = itertools.islice(iter(self.sharded), self.steps)
        else:
            mine = itertools.islice(iter(self.batches), self.rank, self.steps * self.world, self.world)
        for i, (x, y) in enumerate(mine):
            if i >= skip:
                yield x, y
