"""Cut the embedded demo subset (class-balanced, first-N per class, in a fixed shuffled order) from the shared CIFAR-10 JPEG set.

Usage: python tools/make_demo_data.py [../shared/data/cifar10-jpeg/cifar10-jpeg.npz]
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

N_TRAIN_PER_CLASS = 1000
N_TEST_PER_CLASS = 200


def _subset(jpeg: np.ndarray, offsets: np.ndarray, labels: np.ndarray, per_class: int):
    idx = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(10)])
    # a fixed shuffle: the first N images of a split are then a fair sample of every class
    idx = np.random.default_rng(0).permutation(idx)
    chunks = [jpeg[offsets[i] : offsets[i + 1]] for i in idx]
    new_off = np.zeros(len(idx) + 1, dtype=np.int64)
    new_off[1:] = np.cumsum([len(c) for c in chunks])
    return np.concatenate(chunks), new_off, labels[idx]


def main() -> None:
    src = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/cifar10-jpeg/cifar10-jpeg.npz")
    d = np.load(src)
    tr = _subset(d["train_jpeg"], d["train_offsets"], d["train_labels"], N_TRAIN_PER_CLASS)
    te = _subset(d["test_jpeg"], d["test_offsets"], d["test_labels"], N_TEST_PER_CLASS)
    out = Path(__file__).resolve().parent.parent / "edgeprune/data/embedded/cifar10-demo.npz"
    np.savez(out, train_jpeg=tr[0], train_offsets=tr[1], train_labels=tr[2],
             test_jpeg=te[0], test_offsets=te[1], test_labels=te[2], classes=d["classes"])
    print(out, out.stat().st_size)


if __name__ == "__main__":
    main()
