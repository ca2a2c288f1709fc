"""Image folders streamed from disk (edgeprune/data/folder.py): layouts, split, transforms, modes, bad input."""
from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from edgeprune.data import folder, load_data
from edgeprune.data.folder import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    FolderConfig,
    check_input_size,
    decode_folder,
    folder_loaders,
    random_resized_crop,
    resize_centre_crop,
    scan_folder,
    skipped_images,
    to_rgb,
)
from edgeprune.errors import BadInput


def write_folder(root: Path, classes: tuple[str, ...] = ("cat", "dog", "fox"), per_class: int = 10, seed: int = 0,
                 min_side: int = 12, max_side: int = 90) -> Path:
    """Class folders of random-size JPEGs and PNGs, each class a different dominant colour."""
    rng = np.random.default_rng(seed)
    for ci, c in enumerate(classes):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            w, h = (int(v) for v in rng.integers(min_side, max_side, 2))
            a = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
            a[..., ci % 3] += 150
            Image.fromarray(a).save(root / c / f"{i:03d}.{'jpg' if i % 2 else 'png'}")
    return root


def cfg(**kw) -> FolderConfig:
    base = {"input_size": 16, "batch_size": 4, "workers": 0}
    return FolderConfig(**{**base, **kw})


# ---------------------------------------------------------------- layouts and the split


def test_flat_layout_splits_per_class_deterministically(tmp_path) -> None:
    write_folder(tmp_path / "d", per_class=10)
    a, b = scan_folder(tmp_path / "d", 0.2, seed=0), scan_folder(tmp_path / "d", 0.2, seed=0)
    assert a.layout == "split" and a.classes == ("cat", "dog", "fox")
    assert np.array_equal(a.train_files, b.train_files) and np.array_equal(a.val_files, b.val_files)
    assert np.bincount(a.val_labels).tolist() == [2, 2, 2] and np.bincount(a.train_labels).tolist() == [8, 8, 8]
    assert not set(a.train_files.tolist()) & set(a.val_files.tolist())
    assert len(a.train_files) + len(a.val_files) == 30
    other = scan_folder(tmp_path / "d", 0.2, seed=1)
    assert not np.array_equal(a.val_files, other.val_files)
    # a label is the class folder the file is in
    for f, y in zip(a.train_files, a.train_labels, strict=True):
        assert Path(f.decode()).parent.name == a.classes[y]


def test_train_val_layout_is_used_as_is(tmp_path) -> None:
    write_folder(tmp_path / "d" / "train", per_class=4)
    write_folder(tmp_path / "d" / "val", classes=("cat", "fox"), per_class=2, seed=1)
    s = scan_folder(tmp_path / "d")
    assert s.layout == "train/val" and s.classes == ("cat", "dog", "fox")
    assert len(s.train_files) == 12 and len(s.val_files) == 4
    assert sorted(set(s.val_labels.tolist())) == [0, 2]  # fox keeps the train index
    assert all(b"/val/" in f for f in s.val_files)


def test_test_folder_counts_as_val_and_nested_files_are_found(tmp_path) -> None:
    write_folder(tmp_path / "d" / "train", per_class=3)
    write_folder(tmp_path / "d" / "test" / "cat" / "deeper", classes=("x",), per_class=2)
    (tmp_path / "d" / "train" / "cat" / "notes.txt").write_text("not an image")
    s = scan_folder(tmp_path / "d")
    assert len(s.val_files) == 2 and set(s.val_labels.tolist()) == {0} and len(s.train_files) == 9


@pytest.mark.parametrize("case, message", [
    ("missing", "image folder not found"),
    ("no_classes", "no class sub-folders"),
    ("loose", "put each class in its own sub-folder"),
    ("empty_class", "class folder 'empty' has no images"),
    ("no_images", "has no images"),
    ("val_unknown", "not among the train classes"),
    ("one_image", "too few images"),
])
def test_bad_folders_are_one_line_errors(tmp_path, case: str, message: str) -> None:
    d = tmp_path / "d"
    if case == "no_classes":
        d.mkdir()
    elif case == "loose":
        d.mkdir()
        Image.new("RGB", (8, 8)).save(d / "a.png")
    elif case == "empty_class":
        write_folder(d, per_class=3)
        (d / "empty").mkdir()
    elif case == "no_images":
        (d / "a").mkdir(parents=True)
        (d / "a" / "readme.txt").write_text("x")
    elif case == "val_unknown":
        write_folder(d / "train", per_class=2)
        write_folder(d / "val", classes=("cow",), per_class=2)
    elif case == "one_image":
        write_folder(d, classes=("a",), per_class=1)
    with pytest.raises(BadInput, match=message) as err:
        folder_loaders(d, cfg())
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------- loaders


def test_loaders_give_float_nchw_batches_and_int64_labels(tmp_path) -> None:
    write_folder(tmp_path / "d", per_class=10)
    train, val = folder_loaders(tmp_path / "d", cfg(input_size=24, batch_size=5))
    assert isinstance(train, torch.utils.data.DataLoader) and train.dataset.classes == ("cat", "dog", "fox")
    batches = list(train)
    assert len(batches) == 24 // 5 and all(x.shape == (5, 3, 24, 24) for x, _ in batches)  # drop_last in training
    x, y = batches[0]
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    vx = torch.cat([b[0] for b in val])
    vy = torch.cat([b[1] for b in val])
    assert vx.shape == (6, 3, 24, 24) and vy.tolist() == sorted(vy.tolist())  # val in file order
    # the class colour survives the transforms: the dominant channel is the label
    assert (vx.mean(dim=(2, 3)).argmax(1) == vy).all()


def test_seeded_loaders_repeat_and_workers_agree(tmp_path) -> None:
    write_folder(tmp_path / "d", per_class=8)

    def first_epoch(workers: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
        train, _ = folder_loaders(tmp_path / "d", cfg(workers=workers, seed=seed))
        return list(train)

    a, b = first_epoch(0), first_epoch(0)
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b, strict=True))
    c, d = first_epoch(2), first_epoch(2)
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(c, d, strict=True))
    # the shuffling order is the loader generator's, whatever the workers
    assert all(torch.equal(ya, yc) for (_, ya), (_, yc) in zip(a, c, strict=True))
    e = first_epoch(0, seed=3)
    assert not all(torch.equal(ya, ye) for (_, ya), (_, ye) in zip(a, e, strict=True))


def test_mean_std_normalise(tmp_path) -> None:
    d = tmp_path / "d"
    for c, colour in (("a", (255, 0, 0)), ("b", (0, 128, 255))):
        (d / c).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (40 + 10 * i, 30), colour).save(d / c / f"{i}.png")
    _, val = folder_loaders(d, cfg(input_size=8, mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 0.5)))
    x, y = next(iter(val))
    for xi, yi in zip(x, y, strict=True):
        colour = torch.tensor((255, 0, 0) if yi == 0 else (0, 128, 255)) / 255.0
        want = (colour - 0.5) / torch.tensor((0.5, 0.25, 0.5))
        assert torch.allclose(xi.mean(dim=(1, 2)), want, atol=1e-5)
    assert folder.FolderConfig().mean == IMAGENET_MEAN and folder.FolderConfig().std == IMAGENET_STD


@pytest.mark.parametrize("kw, message", [
    ({"mean": (0.5, 0.5)}, "--mean needs 3 values"),
    ({"mean": (120.0, 0.5, 0.5)}, "0-1 scale"),
    ({"std": (0.5, 0.0, 0.5)}, "--std values must be > 0"),
    ({"workers": -1}, "--workers must be >= 0"),
    ({"input_size": 4}, "--input-size must be"),
])
def test_bad_config(kw: dict, message: str) -> None:
    with pytest.raises(BadInput, match=message):
        FolderConfig(**kw)


# ---------------------------------------------------------------- transforms and modes


def test_eval_transform_resizes_the_shorter_side_then_centre_crops() -> None:
    a = np.zeros((50, 200, 3), np.uint8)
    a[:, 75:125] = 255  # a white band in the middle third of a wide image
    out = resize_centre_crop(Image.fromarray(a), 32, 36)
    assert out.size == (32, 32)
    o = np.asarray(out)
    # shorter side 50 -> 36, width 200 -> 144; the 32 px centre crop spans x 56..88 of it: the band is 54..90
    assert o[:, 2:30].min() > 200
    tall = resize_centre_crop(Image.new("RGB", (30, 300)), 16, 18)
    assert tall.size == (16, 16)
    assert FolderConfig(input_size=224).resize_size == 256


def test_random_resized_crop_size_seed_and_flip(tmp_path) -> None:
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 90, 3), dtype=np.uint8))
    a = random_resized_crop(img, 20, random.Random(1))
    b = random_resized_crop(img, 20, random.Random(1))
    c = random_resized_crop(img, 20, random.Random(2))
    assert a.size == (20, 20) and np.array_equal(np.asarray(a), np.asarray(b)) and not np.array_equal(np.asarray(a), np.asarray(c))
    # scale (1, 1) and ratio 1 on a square image: the whole image, resized
    sq = Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 40, 3), dtype=np.uint8))
    whole = random_resized_crop(sq, 20, random.Random(0), scale=(1.0, 1.0), ratio=(1.0, 1.0))
    assert np.array_equal(np.asarray(whole), np.asarray(sq.resize((20, 20), Image.Resampling.BILINEAR)))
    # an impossible aspect falls back to a centre crop
    assert random_resized_crop(Image.new("RGB", (300, 10)), 8, random.Random(0)).size == (8, 8)
    # training: with the whole (square) image as the crop, each image comes out as is or flipped, about half each
    (tmp_path / "d" / "a").mkdir(parents=True)
    (tmp_path / "d" / "b").mkdir(parents=True)
    sq.save(tmp_path / "d" / "a" / "0.png")
    for i in range(3):
        sq.save(tmp_path / "d" / "b" / f"{i}.png")
    train, _ = folder_loaders(tmp_path / "d", cfg(input_size=20, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0)))
    plain = folder.to_tensor(sq.resize((20, 20), Image.Resampling.BILINEAR), IMAGENET_MEAN, IMAGENET_STD)
    flipped = plain.flip(-1)
    outs = [train.dataset[0][0] for _ in range(40)]
    n_plain = sum(torch.allclose(x, plain) for x in outs)
    n_flip = sum(torch.allclose(x, flipped) for x in outs)
    assert n_plain + n_flip == 40 and 8 < n_flip < 32


def _mode_images(d: Path) -> dict[str, Path]:
    """One image per awkward PIL mode."""
    (d / "modes").mkdir(parents=True)
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 41, 3), dtype=np.uint8))
    out = {}
    specs = {
        "grey.jpg": rgb.convert("L"), "rgba.png": rgb.convert("RGBA"), "cmyk.jpg": rgb.convert("CMYK"),
        "palette.png": rgb.convert("P"), "la.png": rgb.convert("LA"), "bw.png": rgb.convert("1"),
        "grey16.png": Image.fromarray((np.arange(30 * 41).reshape(30, 41) * 50).astype(np.uint16)),
        "float.tif": Image.fromarray(np.linspace(0, 1, 30 * 41, dtype=np.float32).reshape(30, 41)),
    }
    for name, im in specs.items():
        if name == "palette.png":
            im.info["transparency"] = 0
            im.save(d / "modes" / name, transparency=0)
        else:
            im.save(d / "modes" / name)
        out[name] = d / "modes" / name
    return out


def test_every_mode_becomes_rgb(tmp_path) -> None:
    files = _mode_images(tmp_path / "d")
    for name, f in files.items():
        with Image.open(f) as im:
            rgb = to_rgb(im)
            assert rgb.mode == "RGB", name
        arr = np.asarray(rgb)
        if name in ("grey16.png", "float.tif"):
            assert arr.max() > 200 and arr.min() < 30, name  # scaled to 8 bits, not clipped to white
    (tmp_path / "d" / "more").mkdir()
    Image.new("RGB", (20, 20)).save(tmp_path / "d" / "more" / "x.png")
    train, val = folder_loaders(tmp_path / "d", cfg(input_size=16, batch_size=2))
    n = sum(len(y) for _, y in val) + sum(len(y) for _, y in train)
    assert n >= len(files) - 1 and skipped_images(train, val) == 0


# ---------------------------------------------------------------- corrupt files


def test_corrupt_jpeg_is_skipped_with_a_count(tmp_path, caplog) -> None:
    d = write_folder(tmp_path / "d", classes=("a", "b"), per_class=40)
    good = (d / "a" / "001.jpg").read_bytes()
    (d / "a" / "zz-truncated.jpg").write_bytes(good[: len(good) // 3])
    (d / "b" / "zz-garbage.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg at all")
    config = cfg(batch_size=8, val_fraction=0.1)
    with caplog.at_level(logging.WARNING, logger="edgeprune.data"):
        train, val = folder_loaders(d, config)
        seen = sum(len(y) for _, y in train) + sum(len(y) for _, y in val)
        seen += sum(len(y) for _, y in train)  # a second epoch: no crash, no second log line
    assert skipped_images(train, val) == 2
    bad = sorted(Path(p).name for p in train.dataset.bad_files() + val.dataset.bad_files())
    assert bad == ["zz-garbage.jpg", "zz-truncated.jpg"]
    logged = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(logged) == 2 and all("\n" not in m for m in logged)
    assert seen == 2 * (len(train.dataset) // 8) * 8 + len(val.dataset)  # every batch full: bad images are replaced


def test_corrupt_jpeg_skipped_inside_worker_processes(tmp_path) -> None:
    d = write_folder(tmp_path / "d", classes=("a", "b"), per_class=80)
    # many good images first: the up-front probe decodes only a sample, the workers meet the bad one
    good = (d / "b" / "001.jpg").read_bytes()
    (d / "b" / "001-damaged.jpg").write_bytes(good[:40])
    train, val = folder_loaders(d, cfg(batch_size=16, workers=2))
    probed = train.dataset.skipped + val.dataset.skipped
    total = sum(len(y) for _, y in train) + sum(len(y) for _, y in val)
    assert probed == 0 and total > 0 and skipped_images(train, val) == 1


def test_a_folder_of_unreadable_images_is_refused_before_training(tmp_path) -> None:
    for c in ("a", "b"):
        (tmp_path / "d" / c).mkdir(parents=True)
        for i in range(4):
            (tmp_path / "d" / c / f"{i}.jpg").write_bytes(b"garbage")
    with pytest.raises(BadInput, match="none of .* images tried can be decoded") as err:
        folder_loaders(tmp_path / "d", cfg())
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------- memory: the file list only


def test_loaders_decode_only_a_probe_up_front(tmp_path, monkeypatch) -> None:
    write_folder(tmp_path / "d", classes=("a", "b"), per_class=100, max_side=30)
    calls = []
    real = folder.open_image
    monkeypatch.setattr(folder, "open_image", lambda *a, **k: calls.append(1) or real(*a, **k))
    train, val = folder_loaders(tmp_path / "d", cfg())
    assert len(calls) <= 2 * folder.PROBE_IMAGES < len(train.dataset) + len(val.dataset)
    # the datasets hold paths (one bytes array) and labels, never pixels
    assert train.dataset.files.dtype.kind == "S" and train.dataset.files.nbytes < 200 * 200
    calls.clear()
    next(iter(train))
    assert len(calls) == 4


# ---------------------------------------------------------------- the eager path of load_data


def test_load_data_on_a_mixed_size_folder_goes_through_folder_py(tmp_path) -> None:
    write_folder(tmp_path / "d", per_class=5)
    ds = load_data(str(tmp_path / "d"))
    assert ds.classes == ("cat", "dog", "fox") and ds.train.images.shape[1:] == (224, 224, 3)
    assert len(ds.train) + len(ds.test) == 15
    small = decode_folder(tmp_path / "d", cfg(input_size=20), native_size=False)
    assert small.input_shape == (1, 3, 20, 20) and small.test.mean == IMAGENET_MEAN


# ---------------------------------------------------------------- fixed-size heads


class FlatHead(nn.Module):
    """A classifier whose linear layer is sized for 32x32 inputs."""

    def __init__(self, size: int = 32) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, 2, 1)
        self.fc = nn.Linear(4 * (size // 2) ** 2, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).flatten(1))


class PooledHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, 2, 1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bn(self.conv(x)).mean((2, 3)))


class SizeDependentOutput(nn.Module):
    """Runs at every size, but its output width changes with it: no fixed class count."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.avg_pool2d(x, 8).flatten(1)


def test_check_input_size() -> None:
    pooled = PooledHead().train()
    assert check_input_size(pooled, 64) == (1, 5) and pooled.training  # the mode is restored
    assert pooled.bn.num_batches_tracked.item() == 0  # checked in eval mode: BN statistics untouched
    assert check_input_size(FlatHead(32), 32) == (1, 5)
    with pytest.raises(BadInput, match=r"needs 32x32 input, not --input-size 224.*pass --input-size 32") as err:
        check_input_size(FlatHead(32), 224, name="model m")
    assert "\n" not in str(err.value) and str(err.value).startswith("model m has a fixed-size head")
    with pytest.raises(BadInput, match="needs 64x64"):
        check_input_size(FlatHead(64), 32)
    with pytest.raises(BadInput, match="output is .* at 32x32 but .* at 224x224"):
        check_input_size(SizeDependentOutput(), 32)
