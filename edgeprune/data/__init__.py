"""Image data: the embedded CIFAR-10 demo subset, the full shared set, ``.npz`` files and image folders.

Images are decoded once into uint8 NHWC arrays (decoding JPEG inside a
training loop would make data loading the bottleneck on 2 cores) and
normalised on the fly, batch by batch.
"""
from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from edgeprune.errors import BadInput

EMBEDDED = Path(__file__).resolve().parent / "embedded" / "cifar10-demo.npz"
CIFAR_MEAN = (0.485, 0.456, 0.406)
CIFAR_STD = (0.229, 0.224, 0.225)
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclass
class ImageSet:
    """Decoded images (uint8, N x H x W x C) with integer labels."""

    images: np.ndarray
    labels: np.ndarray
    mean: Sequence[float] = CIFAR_MEAN
    std: Sequence[float] = CIFAR_STD

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray | slice) -> ImageSet:
        """A view on some of the images."""
        return ImageSet(self.images[index], self.labels[index], self.mean, self.std)

    def normalise(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 NHWC -> float NCHW, normalised with this set's mean and std."""
        x = torch.as_tensor(images).permute(0, 3, 1, 2).float().div_(255.0)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)
        return (x - mean) / std

    def batches(self, batch_size: int = 256, limit: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Normalised (x, y) batches in order, optionally only the first ``limit`` images."""
        n = len(self) if limit is None else min(limit, len(self))
        for i in range(0, n, batch_size):
            j = min(i + batch_size, n)
            yield self.normalise(self.images[i:j]), torch.as_tensor(self.labels[i:j], dtype=torch.long)

    def example(self, batch: int = 1) -> torch.Tensor:
        """The first ``batch`` images as a normalised tensor (an example input for tracing)."""
        return self.normalise(self.images[:batch])

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        """``n`` images drawn at random (seeded) as a normalised tensor: for calibration.

        Not the first ``n``: a split stored class by class (the shared CIFAR-10 JPEG
        train split is) would calibrate int8 ranges on a single class.
        """
        idx = np.sort(np.random.default_rng(seed).permutation(len(self))[:n])
        return self.normalise(self.images[idx])


@dataclass
class Dataset:
    """A train and a test split with class names."""

    name: str
    train: ImageSet
    test: ImageSet
    classes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes) or int(max(self.train.labels.max(initial=0), self.test.labels.max(initial=0))) + 1

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input batch of size 1 (1, C, H, W)."""
        _, h, w, c = self.test.images.shape
        return (1, c, h, w)


def shared_data_dirs() -> list[Path]:
    """Where ``../shared/data`` may be: $EDGEPRUNE_SHARED_DATA, then beside the project or the cwd."""
    out = []
    env = os.environ.get("EDGEPRUNE_SHARED_DATA")
    if env:
        out.append(Path(env))
    root = Path(__file__).resolve().parents[2]
    out += [root.parent / "shared" / "data", Path.cwd().parent / "shared" / "data", Path.cwd() / "shared" / "data"]
    return out


def find_shared(relative: str) -> Path | None:
    """The first existing ``shared/data/<relative>``, or None."""
    for d in shared_data_dirs():
        p = d / relative
        if p.exists():
            return p
    return None


def _decode_jpegs(buf: np.ndarray, offsets: np.ndarray, what: str) -> np.ndarray:
    from PIL import Image

    n = len(offsets) - 1
    if n <= 0:
        raise BadInput(f"dataset {what} is empty")
    first = np.asarray(Image.open(io.BytesIO(buf[offsets[0] : offsets[1]].tobytes())).convert("RGB"))
    out = np.empty((n, *first.shape), dtype=np.uint8)
    for i in range(n):
        try:
            img = Image.open(io.BytesIO(buf[offsets[i] : offsets[i + 1]].tobytes())).convert("RGB")
            out[i] = np.asarray(img)
        except Exception as err:  # noqa: BLE001 - PIL raises many kinds: one-line user-facing error
            raise BadInput(f"dataset {what}: image {i} cannot be decoded ({err})") from None
    return out


def _cache_dir() -> Path:
    from edgeprune.paths import cache_dir

    return cache_dir()


def _load_jpeg_npz(path: Path, name: str) -> Dataset:
    """A JPEG npz, its test split in a fixed shuffled order (the shared CIFAR-10 file is sorted by
    class, so "the first N test images" would otherwise be one or two classes)."""
    ds = _decode_jpeg_npz(path, name)
    perm = np.random.default_rng(0).permutation(len(ds.test))
    ds.test = ds.test.subset(perm)
    return ds


def _decode_jpeg_npz(path: Path, name: str) -> Dataset:
    st = path.stat()
    key = hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    cache = _cache_dir() / f"decoded-{key}.npz"
    if cache.exists():
        try:
            with np.load(cache) as c:
                d = {k: c[k] for k in c.files}
            return Dataset(name, ImageSet(d["xtr"], d["ytr"]), ImageSet(d["xte"], d["yte"]), tuple(d["classes"].tolist()))
        except Exception:  # noqa: BLE001 - an unreadable cache is dropped and rebuilt
            cache.unlink(missing_ok=True)
    with np.load(path) as z:
        xtr = _decode_jpegs(z["train_jpeg"], z["train_offsets"], f"{path} (train)")
        xte = _decode_jpegs(z["test_jpeg"], z["test_offsets"], f"{path} (test)")
        ytr, yte = z["train_labels"].astype(np.int64), z["test_labels"].astype(np.int64)
        classes = tuple(str(c) for c in z["classes"]) if "classes" in z.files else CIFAR_CLASSES
    try:
        from edgeprune.fileio import atomic_path

        with atomic_path(cache) as tmp, open(tmp, "wb") as f:
            np.savez(f, xtr=xtr, ytr=ytr, xte=xte, yte=yte, classes=np.array(classes))
    except Exception:  # noqa: BLE001, S110 - writing the cache is optional
        pass  # a cache is an optimisation; a read-only home must not fail the run
    return Dataset(name, ImageSet(xtr, ytr), ImageSet(xte, yte), classes)


def _load_plain_npz(path: Path) -> Dataset:
    with np.load(path) as z:
        files = set(z.files)
        if {"train_jpeg", "train_offsets", "train_labels"} <= files:
            return _load_jpeg_npz(path, path.stem)
        pairs = [("x_train", "y_train", "x_test", "y_test"), ("images", "labels", None, None), ("x", "y", None, None)]
        for xk, yk, xtk, ytk in pairs:
            if xk in files and yk in files:
                x, y = z[xk], z[yk]
                xt, yt = (z[xtk], z[ytk]) if xtk and xtk in files and ytk in files else (None, None)
                break
        else:
            raise BadInput(f"dataset {path}: expected arrays images/labels, x/y or x_train/y_train (found {sorted(files)})")
    x = _as_nhwc_uint8(x, path)
    y = np.asarray(y).astype(np.int64).reshape(-1)
    if len(x) != len(y) or len(y) == 0:
        raise BadInput(f"dataset {path}: {len(x)} images but {len(y)} labels")
    if xt is None:
        # deterministic 80/20 split when the file has no test split
        n_test = max(1, len(y) // 5)
        xt, yt, x, y = x[-n_test:], y[-n_test:], x[:-n_test], y[:-n_test]
    else:
        xt = _as_nhwc_uint8(xt, path)
        yt = np.asarray(yt).astype(np.int64).reshape(-1)
    for arr in (y, yt):
        if arr.size and arr.min() < 0:
            raise BadInput(f"dataset {path}: negative label {int(arr.min())}")
    return Dataset(path.stem, ImageSet(x, y), ImageSet(xt, yt))


def _as_nhwc_uint8(x: np.ndarray, path: Path) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 4:
        raise BadInput(f"dataset {path}: images must be 4-D (N,H,W,C or N,C,H,W), got shape {x.shape}")
    if x.shape[1] in (1, 3) and x.shape[-1] not in (1, 3):
        x = x.transpose(0, 2, 3, 1)
    if x.dtype != np.uint8:
        if np.issubdtype(x.dtype, np.floating) and x.size and x.max() <= 1.0:
            x = x * 255.0
        x = np.clip(x, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(x)


def _load_folder(path: Path) -> Dataset:
    """An image folder decoded into memory (images of one size kept as they are, else resized and centre-cropped
    to 224): the eager path of ``load_data``. The CLI streams folders instead (``edgeprune.data.folder``)."""
    from edgeprune.data.folder import decode_folder

    return decode_folder(path)


def load_data(spec: str | Dataset) -> Dataset:
    """A dataset from ``cifar10-demo`` (embedded), ``cifar10-full`` (../shared/data), an ``.npz`` or a folder."""
    if isinstance(spec, Dataset):
        return spec
    if spec in ("cifar10-demo", "demo"):
        return _load_jpeg_npz(EMBEDDED, "cifar10-demo")
    if spec in ("cifar10-full", "cifar10"):
        p = find_shared("cifar10-jpeg/cifar10-jpeg.npz")
        if p is None:
            where = ", ".join(str(d) for d in shared_data_dirs())
            raise BadInput(f"cifar10-full not found (looked in {where}); set EDGEPRUNE_SHARED_DATA or pass a path")
        return _load_jpeg_npz(p, "cifar10-full")
    path = Path(spec)
    if not path.exists():
        raise BadInput(f"dataset not found: {spec!r} (use cifar10-demo, cifar10-full, an .npz file or an image folder)")
    if path.is_dir():
        return _load_folder(path)
    try:
        return _load_plain_npz(path)
    except BadInput:
        raise
    except Exception as err:  # noqa: BLE001 - any unreadable file: one-line user-facing error
        raise BadInput(f"cannot read dataset {path}: {err}") from None


def check_labels(data: Dataset, num_classes: int) -> None:
    """Fail clearly when labels do not fit the model's output size."""
    for split, s in (("train", data.train), ("test", data.test)):
        if len(s) and int(s.labels.max()) >= num_classes:
            raise BadInput(
                f"dataset {data.name} ({split}): label {int(s.labels.max())} out of range for a model with {num_classes} outputs"
            )


__all__ = ["CIFAR_MEAN", "CIFAR_STD", "Dataset", "ImageSet", "check_labels", "find_shared", "load_data"]
