"""CIFAR-10 at a larger input size for the headline benchmark (issue 25: EfficientNet-Lite0 at 96-128 px).

The decoded 32 px images stay in memory as they are; every batch is upscaled when it is taken
(``images[idx]``), bilinearly in torch, so 50k images at 128 px (2.5 GB as uint8) are never held at once.
:class:`UpscaledImages` is array-like for what edgeprune's data paths do with ``ImageSet.images``
(index with an int, a slice or a sorted index array; ``shape``, ``dtype``, ``len``), and
:class:`UpscaledImageSet` keeps ``subset`` lazy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from edgeprune.data import Dataset, ImageSet


class UpscaledImages:
    """uint8 NHWC images, upscaled to ``size`` x ``size`` when indexed (bilinear, no antialiasing: upscaling)."""

    def __init__(self, base: np.ndarray, size: int) -> None:
        self.base, self.size = base, int(size)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(N, size, size, C), as the upscaled array would have."""
        return (len(self.base), self.size, self.size, self.base.shape[-1])

    @property
    def dtype(self) -> np.dtype:
        """uint8, as the decoded images."""
        return self.base.dtype

    @property
    def ndim(self) -> int:
        """4 (NHWC)."""
        return 4

    def __len__(self) -> int:
        return len(self.base)

    def resize(self, images: np.ndarray) -> np.ndarray:
        """A uint8 NHWC batch upscaled to ``size`` x ``size`` (torch bilinear, rounded back to uint8)."""
        if images.shape[1] == self.size and images.shape[2] == self.size:
            return images
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
        y = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return y.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()

    def view(self, index: Any) -> UpscaledImages:
        """A lazy subset (nothing upscaled yet)."""
        return UpscaledImages(self.base[index], self.size)

    def __getitem__(self, index: Any) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            return self.resize(self.base[index : index + 1])[0] if index >= 0 else self.resize(self.base[[index]])[0]
        return self.resize(self.base[index])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self.resize(self.base)
        return out if dtype is None else out.astype(dtype)


@dataclass
class UpscaledImageSet(ImageSet):
    """An :class:`ImageSet` whose ``images`` are :class:`UpscaledImages` (subsets stay lazy)."""

    def subset(self, index: np.ndarray | slice) -> ImageSet:
        """A lazy view on some of the images."""
        return UpscaledImageSet(self.images.view(index), self.labels[index], self.mean, self.std)


def upscale(ds: Dataset, size: int | None) -> Dataset:
    """``ds`` with both splits upscaled to ``size`` px per batch (``ds`` itself when ``size`` is None or already so)."""
    if size is None or ds.test.images.shape[1] == size:
        return ds

    def up(s: ImageSet) -> ImageSet:
        return UpscaledImageSet(UpscaledImages(np.asarray(s.images), size), s.labels, s.mean, s.std)

    return Dataset(f"{ds.name}@{size}px", up(ds.train), up(ds.test), ds.classes)
