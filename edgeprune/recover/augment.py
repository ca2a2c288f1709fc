"""Fast batch augmentation on uint8 NHWC arrays: random crop with padding and horizontal flip."""
from __future__ import annotations

import numpy as np


def random_crop_flip(images: np.ndarray, rng: np.random.Generator, pad: int = 4, flip: bool = True) -> np.ndarray:
    """Pad each image by ``pad`` (zeros), crop back to size at a random offset, flip half of them.

    Vectorised over the batch with fancy indexing: no per-image Python work
    beyond index arithmetic, so data loading never limits training on 2 cores.
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
