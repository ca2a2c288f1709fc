"""Fast batch input pipeline on decoded uint8 NHWC arrays: random crop with padding, flip, normalise.

Everything here is numpy on whole batches (no per-image Python work), and
:class:`BatchLoader` prepares the next batch in a background thread while the
model trains on the current one (numpy releases the GIL for the copies), so on
2 cores the loader is never the bottleneck (docs/recover.md has the figures).

Normalisation is done in numpy on purpose: tiny element-wise torch ops on a
loaded machine pay torch's intra-op thread synchronisation on every call
(measured here: 720 img/s for ``ImageSet.normalise`` with 2 torch threads
under load against 3,300 img/s for crop + flip + normalise in numpy).
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence

import numpy as np
import torch


def random_crop_flip(images: np.ndarray, rng: np.random.Generator, pad: int = 4, flip: bool = True) -> np.ndarray:
    """Pad each image by ``pad`` (zeros), crop back to size at a random offset, flip half of them.

    Vectorised over the batch with fancy indexing: no per-image Python work
    beyond index arithmetic.
    """
    n, h, w, c = images.shape
    if pad > 0:
        padded = np.zeros((n, h + 2 * pad, w + 2 * pad, c), dtype=images.dtype)
        padded[:, pad : pad + h, pad : pad + w] = images
        oy = rng.integers(0, 2 * pad + 1, n)
        ox = rng.integers(0, 2 * pad + 1, n)
        rows = oy[:, None] + np.arange(h)[None, :]  # n x h
        cols = ox[:, None] + np.arange(w)[None, :]  # n x w
        out = padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
    else:
        out = images.copy()
    if flip:
        f = rng.random(n) < 0.5
        out[f] = out[f, :, ::-1]
    return out


class Normaliser:
    """uint8 NHWC -> float32 NCHW ``(x / 255 - mean) / std`` in numpy (same result as ``ImageSet.normalise``)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        std_ = np.asarray(std, np.float32)
        self.scale = (1.0 / (255.0 * std_)).reshape(1, -1, 1, 1).astype(np.float32)
        self.shift = (-np.asarray(mean, np.float32) / std_).reshape(1, -1, 1, 1).astype(np.float32)

    def __call__(self, images: np.ndarray) -> torch.Tensor:
        x = np.ascontiguousarray(images.transpose(0, 3, 1, 2)).astype(np.float32)
        x *= self.scale
        x += self.shift
        return torch.from_numpy(x)


class BatchLoader:
    """Shuffled, augmented, normalised training batches for one process (or one rank's shard).

    Every epoch draws a permutation of the whole split from ``rng`` (identical on
    every rank, since all ranks share the seed), keeps the first ``per_epoch``
    images, and cuts it into ``steps`` global batches of ``batch_size``; with
    ``world`` processes rank ``rank`` takes the rank-th slice of each global batch,
    so the schedule (steps, learning rate) does not depend on how many processes
    run. Batches are prepared ``prefetch`` ahead in a background thread.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, mean: Sequence[float], std: Sequence[float],
                 batch_size: int, per_epoch: int, rng: np.random.Generator, augment: bool = True,
                 rank: int = 0, world: int = 1, prefetch: int = 3) -> None:
        if batch_size < world:
            raise ValueError(f"batch size {batch_size} is smaller than the number of processes {world}")
        self.images, self.labels = images, labels
        self.norm = Normaliser(mean, std)
        self.batch_size, self.per_epoch = batch_size, per_epoch
        self.steps = max(1, per_epoch // batch_size)
        self.rng, self.augment = rng, augment
        self.rank, self.world = rank, world
        self.prefetch = prefetch
        # shard bounds inside a global batch: as even as possible
        self._bounds = [(batch_size * r) // world for r in range(world + 1)]

    def rng_state(self) -> dict:
        """State of the shuffling/augmentation generator at an epoch boundary (for checkpoints)."""
        return self.rng.bit_generator.state

    def set_rng_state(self, state: dict) -> None:
        """Restore :meth:`rng_state`."""
        self.rng.bit_generator.state = state

    def _make(self, idx: np.ndarray, aug_rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        imgs = self.images[idx]
        if self.augment:
            imgs = random_crop_flip(imgs, aug_rng)
        return self.norm(imgs), torch.as_tensor(self.labels[idx], dtype=torch.long)

    def epoch(self, skip: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of one epoch (this rank's slices), starting after ``skip`` batches.

        Draws the epoch's permutation and augmentation seed from the generator up
        front, so the generator's state after this call is the same whether or not
        the epoch is consumed to the end (resume at an epoch boundary is exact).
        """
        perm = self.rng.permutation(len(self.labels))[: self.per_epoch]
        aug_rng = np.random.default_rng(self.rng.integers(0, 2**63 - 1))
        lo, hi = self._bounds[self.rank], self._bounds[self.rank + 1]
        plan = []
        for s in range(self.steps):
            g = perm[s * self.batch_size : (s + 1) * self.batch_size]
            plan.append(np.sort(g[lo:hi]))
        plan = plan[skip:]
        if self.prefetch <= 0:
            for idx in plan:
                yield self._make(idx, aug_rng)
            return
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def work() -> None:
            try:
                for idx in plan:
                    item = self._make(idx, aug_rng)
                    while not stop.is_set():
                        try:
                            q.put(item, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
                q.put(None)
            except BaseException as err:  # noqa: BLE001 - handed to the training thread, which re-raises it
                q.put(err)

        th = threading.Thread(target=work, name="edgeprune-loader", daemon=True)
        th.start()
        try:
            while True:
                item = q.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            th.join(timeout=5)
