"""Class folders of images of any size and mode, streamed from disk by DataLoader worker processes.

``folder_loaders(DIR, FolderConfig(input_size=224))`` returns ``(train_loader, val_loader)``: standard
``torch.utils.data.DataLoader``s of ``(float NCHW tensor, int64 label)`` batches. Only the file list is
held in memory (paths as one bytes array, so forked workers do not copy it page by page); every image
is decoded by a worker when its batch is due, so peak memory does not grow with the dataset.

Layouts: ``DIR/train/<class>/...`` with ``DIR/val/<class>/...`` (or ``test/``, ``validation/``) is used
as is; ``DIR/<class>/...`` is split per class, seeded, into train and val (``FolderConfig.val_fraction``).

Transforms (written here with PIL and numpy: torchvision's are not importable on this torch build):
train = random-resized-crop (scale 0.08-1, ratio 3/4-4/3) + horizontal flip at ``input_size``;
eval = resize the shorter side to ``floor(input_size / 0.875)``, then centre crop ``input_size``.
Any PIL mode becomes RGB (grey, 16-bit grey, RGBA, CMYK, palette).

Unreadable images (a corrupt or truncated JPEG) are not fatal: a few images are decoded up front (all
of them failing is a one-line :class:`BadInput` before any training), and during an epoch an image
that fails to decode is logged once, counted (``FolderImages.skipped``, shared by every worker) and
replaced by the next readable image, so a batch never changes shape and an epoch never crashes.
"""
from __future__ import annotations

import logging
import math
import multiprocessing
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, get_worker_info
from torch.utils.data import Dataset as TorchDataset

from edgeprune.errors import BadInput

if TYPE_CHECKING:
    from PIL import Image as PILImage

    from edgeprune.data import Dataset

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".pbm", ".webp", ".tif", ".tiff", ".gif"})
VAL_NAMES = ("val", "validation", "test")
DEFAULT_INPUT_SIZE = 224
EVAL_CROP = 0.875  # eval resizes the shorter side to size / 0.875 (256 for 224), then centre-crops
PROBE_IMAGES = 32  # images decoded up front per split: all of them failing is refused before training
log = logging.getLogger("edgeprune.data")


def default_workers() -> int:
    """Decoding worker processes by default: min(2, CPUs)."""
    return min(2, os.cpu_count() or 1)


@dataclass(frozen=True)
class FolderConfig:
    """How an image folder is read: size, normalisation, batching, workers and the train/val split."""

    input_size: int = DEFAULT_INPUT_SIZE
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    batch_size: int = 32
    eval_batch_size: int | None = None  # default: batch_size
    workers: int | None = None  # default: default_workers()
    val_fraction: float = 0.2  # for a flat class-folder layout
    seed: int = 0  # the split and the shuffling/augmentation stream
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def __post_init__(self) -> None:
        if not isinstance(self.input_size, int) or self.input_size < 8:
            raise BadInput(f"--input-size must be an integer >= 8, got {self.input_size}")
        for name, v in (("mean", self.mean), ("std", self.std)):
            if len(v) != 3:
                raise BadInput(f"--{name} needs 3 values (R,G,B), got {len(v)}")
        if any(not 0.0 <= m <= 1.0 for m in self.mean):
            raise BadInput(f"--mean values are on the 0-1 scale (e.g. 0.485,0.456,0.406), got {','.join(map(str, self.mean))}")
        if any(not s > 0 for s in self.std):
            raise BadInput(f"--std values must be > 0, got {','.join(map(str, self.std))}")
        if self.batch_size < 1 or (self.eval_batch_size is not None and self.eval_batch_size < 1):
            raise BadInput("batch size must be >= 1")
        if self.workers is not None and self.workers < 0:
            raise BadInput(f"--workers must be >= 0, got {self.workers}")
        if not 0.0 < self.val_fraction < 1.0:
            raise BadInput(f"val fraction must be between 0 and 1, got {self.val_fraction}")

    @property
    def resize_size(self) -> int:
        """The shorter side before the eval centre crop."""
        return math.floor(self.input_size / EVAL_CROP)

    @property
    def num_workers(self) -> int:
        """Worker processes to use."""
        return default_workers() if self.workers is None else self.workers


@dataclass(frozen=True)
class FolderSplit:
    """The file lists of an image folder: paths (bytes) and labels per split, and the class names."""

    root: Path
    classes: tuple[str, ...]
    train_files: np.ndarray
    train_labels: np.ndarray
    val_files: np.ndarray
    val_labels: np.ndarray
    layout: str  # "train/val" (given) or "split" (seeded split of one class-folder tree)


def _images_under(folder: Path) -> list[bytes]:
    """Image files under ``folder`` (recursively, sorted, hidden files skipped) as bytes paths."""
    out: list[bytes] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS:
                out.append(os.fsencode(os.path.join(dirpath, f)))
    return out


def _class_dirs(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def _read_classes(folder: Path, classes: Sequence[str] | None = None) -> tuple[tuple[str, ...], list[bytes], list[int]]:
    """Files and labels of the class sub-folders of ``folder`` (classes: their names, or the given ones)."""
    dirs = _class_dirs(folder)
    if not dirs:
        loose = any(p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.iterdir() if p.is_file())
        hint = " (images lie directly in it: put each class in its own sub-folder)" if loose else ""
        raise BadInput(f"image folder {folder} has no class sub-folders{hint}")
    names = tuple(p.name for p in dirs)
    index = {c: i for i, c in enumerate(classes if classes is not None else names)}
    files: list[bytes] = []
    labels: list[int] = []
    for d in dirs:
        if d.name not in index:
            raise BadInput(f"image folder {folder}: class {d.name!r} is not among the train classes ({', '.join(list(index)[:5])}...)")
        found = _images_under(d)
        if not found:
            raise BadInput(f"image folder {folder}: class folder {d.name!r} has no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        files += found
        labels += [index[d.name]] * len(found)
    return (tuple(classes) if classes is not None else names), files, labels


def _as_arrays(files: list[bytes], labels: list[int]) -> tuple[np.ndarray, np.ndarray]:
    return np.array(files, dtype=np.bytes_), np.asarray(labels, dtype=np.int64)


def scan_folder(path: str | os.PathLike[str], val_fraction: float = 0.2, seed: int = 0) -> FolderSplit:
    """The file lists of an image folder (nothing decoded): ``train/`` + ``val/`` as given, else a seeded split.

    The split is per class: ``round(n * val_fraction)`` of each class's images (at least one when the
    class has two or more) go to val, chosen by a permutation seeded with ``seed``.
    """
    root = Path(path)
    if not root.is_dir():
        raise BadInput(f"image folder not found: {root}")
    subdirs = {p.name.lower(): p for p in _class_dirs(root)}
    val_dir = next((subdirs[n] for n in VAL_NAMES if n in subdirs), None)
    if "train" in subdirs and val_dir is not None:
        classes, tr, ytr = _read_classes(subdirs["train"])
        _, va, yva = _read_classes(val_dir, classes)
        return FolderSplit(root, classes, *_as_arrays(tr, ytr), *_as_arrays(va, yva), layout="train/val")
    if "train" in subdirs and len(subdirs) == 1:
        root_classes = subdirs["train"]
    else:
        root_classes = root
    classes, files, labels = _read_classes(root_classes)
    f_arr, y_arr = _as_arrays(files, labels)
    rng = np.random.default_rng(seed)
    val_idx: list[np.ndarray] = []
    for c in range(len(classes)):
        idx = np.flatnonzero(y_arr == c)
        n_val = min(len(idx) - 1, max(1, round(len(idx) * val_fraction))) if len(idx) > 1 else 0
        val_idx.append(np.sort(idx[rng.permutation(len(idx))[:n_val]]))
    is_val = np.zeros(len(y_arr), dtype=bool)
    is_val[np.concatenate(val_idx)] = True
    if not is_val.any():
        raise BadInput(f"image folder {root}: too few images to split into train and val (give train/ and val/ folders)")
    return FolderSplit(root, classes, f_arr[~is_val], y_arr[~is_val], f_arr[is_val], y_arr[is_val], layout="split")


def to_rgb(img: PILImage.Image) -> PILImage.Image:
    """Any PIL mode as RGB: grey, 16-bit or float grey (scaled to 8 bits), RGBA/LA (alpha dropped), CMYK, palette."""
    from PIL import Image

    if img.mode == "RGB":
        return img
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    elif img.mode.startswith("I") or img.mode == "F":
        a = np.asarray(img, dtype=np.float32)
        top = float(a.max()) if a.size else 0.0
        scale = 255.0 if img.mode == "F" and top <= 1.0 else (255.0 / 65535.0 if top > 255.0 else 1.0)
        img = Image.fromarray(np.clip(a * scale, 0, 255).astype(np.uint8), "L")
    return img.convert("RGB")


def open_image(path: str | bytes | os.PathLike[Any], min_side: int | None = None) -> PILImage.Image:
    """Decode one image as RGB; a JPEG is decoded at a reduced scale when it stays at least ``min_side`` per side."""
    from PIL import Image

    with open(path, "rb") as f:
        img = Image.open(f)
        if min_side and img.format == "JPEG":
            img.draft(img.mode, (min_side, min_side))
        img.load()
    return to_rgb(img)


def random_resized_crop(img: PILImage.Image, size: int, rng: random.Random, scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> PILImage.Image:
    """A random area (``scale`` of the image) and aspect (``ratio``) cropped and resized to ``size`` x ``size``."""
    from PIL import Image

    width, height = img.size
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    box = None
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top, left = rng.randint(0, height - h), rng.randint(0, width - w)
            box = (left, top, left + w, top + h)
            break
    if box is None:  # fall back to a centre crop at the nearest allowed aspect
        aspect = width / height
        w, h = (width, round(width / ratio[0])) if aspect < ratio[0] else (
            (round(height * ratio[1]), height) if aspect > ratio[1] else (width, height))
        w, h = min(w, width), min(h, height)
        left, top = (width - w) // 2, (height - h) // 2
        box = (left, top, left + w, top + h)
    return img.resize((size, size), Image.Resampling.BILINEAR, box=box)


def resize_centre_crop(img: PILImage.Image, size: int, resize: int) -> PILImage.Image:
    """Resize the shorter side to ``resize``, then crop the central ``size`` x ``size``."""
    from PIL import Image

    width, height = img.size
    if width <= height:
        new_w, new_h = resize, max(1, int(resize * height / width))
    else:
        new_w, new_h = max(1, int(resize * width / height)), resize
    img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
    left, top = round((new_w - size) / 2.0), round((new_h - size) / 2.0)
    return img.crop((left, top, left + size, top + size))


def to_tensor(img: PILImage.Image, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """RGB PIL image -> float CHW tensor, scaled to 0-1 and normalised with ``mean`` and ``std``.

    In numpy: torch's intra-op threads make these small per-image ops many times slower on a busy machine.
    """
    scale = (1.0 / (255.0 * np.asarray(std, dtype=np.float32))).reshape(3, 1, 1)
    shift = (-np.asarray(mean, dtype=np.float32) / np.asarray(std, dtype=np.float32)).reshape(3, 1, 1)
    x = np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).astype(np.float32)
    x *= scale
    x += shift
    return torch.from_numpy(x)


class FolderImages(TorchDataset):
    """Image files with labels, decoded on access with the train or eval transform (see the module doc)."""

    def __init__(self, files: np.ndarray, labels: np.ndarray, classes: Sequence[str], config: FolderConfig,
                 train: bool, root: str | os.PathLike[str] = "") -> None:
        if len(files) == 0:
            raise BadInput(f"image folder {root}: no images in the {'train' if train else 'val'} split")
        self.files = files
        self.labels = labels
        self.classes = tuple(classes)
        self.config = config
        self.train = train
        self.root = str(root)
        # one flag per image, in shared memory: every worker marks the images it could not decode
        self._bad = multiprocessing.Array("b", len(files), lock=False)
        self._rng = random.Random(config.seed)
        self._rng_seed: int | None = None

    def __len__(self) -> int:
        return len(self.files)

    @property
    def skipped(self) -> int:
        """How many images could not be decoded (and were replaced), over every worker so far."""
        return int(np.frombuffer(self._bad, dtype=np.int8).sum())

    def bad_files(self) -> list[str]:
        """The paths of the images that could not be decoded so far."""
        flags = np.frombuffer(self._bad, dtype=np.int8)
        return [os.fsdecode(self.files[i]) for i in np.flatnonzero(flags)]

    def rng(self) -> random.Random:
        """The augmentation stream: per worker, seeded by the DataLoader (so by its generator), else this set's own."""
        info = get_worker_info()
        if info is not None and info.seed != self._rng_seed:
            self._rng_seed = info.seed
            self._rng = random.Random(info.seed)
        return self._rng

    def load(self, index: int) -> torch.Tensor:
        """Decode and transform image ``index`` (raises on an unreadable file)."""
        cfg = self.config
        path = self.files[index]
        if self.train:
            img = open_image(path, min_side=2 * cfg.input_size)
            rng = self.rng()
            img = random_resized_crop(img, cfg.input_size, rng, cfg.crop_scale, cfg.crop_ratio)
            if rng.random() < 0.5:
                from PIL import Image

                img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        else:
            img = resize_centre_crop(open_image(path, min_side=cfg.resize_size), cfg.input_size, cfg.resize_size)
        return to_tensor(img, cfg.mean, cfg.std)

    def mark_bad(self, index: int, err: BaseException) -> None:
        """Flag image ``index`` as unreadable (logged once per image)."""
        if not self._bad[index]:
            self._bad[index] = 1
            log.warning("skipping unreadable image %s (%s)", os.fsdecode(self.files[index]), str(err).splitlines()[0] if str(err) else type(err).__name__)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        n = len(self.files)
        for k in range(n):
            i = (index + k) % n
            if self._bad[i]:
                continue
            try:
                return self.load(i), int(self.labels[i])
            except Exception as err:  # noqa: BLE001 - PIL raises many kinds for a damaged file: skip it, counted
                self.mark_bad(i, err)
        raise BadInput(f"image folder {self.root}: no readable image left in the {'train' if self.train else 'val'} split")

    def probe(self, count: int = PROBE_IMAGES) -> None:
        """Decode up to ``count`` images spread over the split now: all of them failing is refused before training."""
        picks = np.unique(np.linspace(0, len(self.files) - 1, min(count, len(self.files))).astype(int))
        errors = []
        for i in picks:
            try:
                open_image(self.files[i], min_side=self.config.input_size)
            except Exception as err:  # noqa: BLE001 - PIL raises many kinds for a damaged file
                self.mark_bad(int(i), err)
                errors.append((int(i), err))
        if len(errors) == len(picks):
            i, err = errors[0]
            raise BadInput(f"image folder {self.root}: none of {len(picks)} images tried can be decoded "
                           f"({os.fsdecode(self.files[i])}: {str(err).splitlines()[0] if str(err) else type(err).__name__})")


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # workers decode with PIL; their torch ops are tiny: no thread oversubscription


def make_loader(images: FolderImages, batch_size: int, workers: int, shuffle: bool, seed: int) -> DataLoader:
    """A standard DataLoader over ``images``; shuffling and augmentation are seeded by ``seed``."""
    drop_last = shuffle and len(images) > batch_size  # no odd final batch of one in training (BatchNorm)
    return DataLoader(images, batch_size=batch_size, shuffle=shuffle, num_workers=workers, drop_last=drop_last,
                      generator=torch.Generator().manual_seed(seed), worker_init_fn=_worker_init if workers else None,
                      persistent_workers=False)


def folder_loaders(path: str | os.PathLike[str], config: FolderConfig | None = None) -> tuple[DataLoader, DataLoader]:
    """``(train_loader, val_loader)`` streaming an image folder; class names are ``loader.dataset.classes``.

    Raises :class:`BadInput` (one line) for a missing folder, no class sub-folders, an empty class folder,
    no images at all, a split with no images, or a split whose probed images all fail to decode.
    """
    cfg = config or FolderConfig()
    split = scan_folder(path, cfg.val_fraction, cfg.seed)
    train = FolderImages(split.train_files, split.train_labels, split.classes, cfg, train=True, root=split.root)
    val = FolderImages(split.val_files, split.val_labels, split.classes, cfg, train=False, root=split.root)
    train.probe()
    val.probe()
    workers = cfg.num_workers
    return (make_loader(train, cfg.batch_size, workers, shuffle=True, seed=cfg.seed),
            make_loader(val, cfg.eval_batch_size or cfg.batch_size, workers, shuffle=False, seed=cfg.seed))


def skipped_images(*loaders: DataLoader) -> int:
    """Images that could not be decoded (and were replaced) in these loaders so far."""
    return sum(getattr(ld.dataset, "skipped", 0) for ld in loaders)


def decode_folder(path: str | os.PathLike[str], config: FolderConfig | None = None, native_size: bool = True) -> Dataset:
    """An image folder decoded into memory as an edgeprune ``Dataset`` (the eager fast path of ``load_data``).

    With ``native_size`` and images all of one size, they are kept as they are; otherwise every image goes
    through the eval transform at ``config.input_size``. For folders larger than memory use :func:`folder_loaders`.
    """
    from PIL import Image

    from edgeprune.data import Dataset, ImageSet

    cfg = config or FolderConfig()
    split = scan_folder(path, cfg.val_fraction, cfg.seed)
    sizes = set()
    if native_size:
        for f in (*split.train_files, *split.val_files):
            try:
                with Image.open(os.fsdecode(f)) as im:
                    sizes.add(im.size)
            except Exception as err:  # noqa: BLE001 - PIL raises many kinds for a damaged file
                raise BadInput(f"image folder {split.root}: cannot decode {os.fsdecode(f)} ({err})") from None
            if len(sizes) > 1:
                break
    keep = native_size and len(sizes) == 1

    def read(files: np.ndarray) -> np.ndarray:
        out = []
        for f in files:
            try:
                img = open_image(f) if keep else resize_centre_crop(open_image(f, cfg.resize_size), cfg.input_size, cfg.resize_size)
            except Exception as err:  # noqa: BLE001 - PIL raises many kinds for a damaged file
                raise BadInput(f"image folder {split.root}: cannot decode {os.fsdecode(f)} ({err})") from None
            out.append(np.asarray(img, dtype=np.uint8))
        return np.stack(out)

    return Dataset(split.root.name, ImageSet(read(split.train_files), split.train_labels, cfg.mean, cfg.std),
                   ImageSet(read(split.val_files), split.val_labels, cfg.mean, cfg.std), split.classes)


_PROBE_SIZES = (32, 64, 96, 112, 128, 160, 192, 224, 256, 299, 320, 384)


def _output_shape(model: torch.nn.Module, size: int, channels: int) -> tuple[int, ...] | str:
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, channels, size, size))
    except Exception as err:  # noqa: BLE001 - the user's model may raise anything
        return str(err).splitlines()[0] if str(err) else type(err).__name__
    return tuple(out.shape) if isinstance(out, torch.Tensor) else f"returns {type(out).__name__}, not a tensor"


def check_input_size(model: torch.nn.Module, size: int, channels: int = 3, name: str = "the model") -> tuple[int, ...]:
    """The model's output shape at ``size`` x ``size``; :class:`BadInput` naming the size it needs when it has a
    fixed-size head (it fails there, does not give one row of class scores, or its output changes with the size)."""
    was_training = model.training
    model.eval()
    try:
        got = _output_shape(model, size, channels)
        if isinstance(got, tuple) and len(got) == 2 and got[0] == 1:
            other = 224 if size != 224 else 160
            ref = _output_shape(model, other, channels)
            if isinstance(ref, tuple) and ref != got:
                raise BadInput(f"{name} has a fixed-size head: its output is {got} at {size}x{size} but {ref} at "
                               f"{other}x{other}; pass the size it was trained at with --input-size")
            return got
        why = got if isinstance(got, str) else f"its output is {got}, not one row of class scores"
        for s in _PROBE_SIZES:
            if s != size:
                out = _output_shape(model, s, channels)
                if isinstance(out, tuple) and len(out) == 2 and out[0] == 1:
                    raise BadInput(f"{name} has a fixed-size head: it needs {s}x{s} input, not --input-size {size} "
                                   f"({why}); pass --input-size {s}")
        raise BadInput(f"{name} does not run at --input-size {size} ({why})")
    finally:
        model.train(was_training)


__all__ = [
    "DEFAULT_INPUT_SIZE", "IMAGENET_MEAN", "IMAGENET_STD", "IMAGE_EXTENSIONS", "FolderConfig", "FolderImages",
    "FolderSplit", "check_input_size", "decode_folder", "default_workers", "folder_loaders", "open_image",
    "random_resized_crop", "resize_centre_crop", "scan_folder", "skipped_images", "to_rgb", "to_tensor",
]
