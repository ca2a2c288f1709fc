"""Embedded models and data, and the loaders for user models and data."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgeprune.data import load_data
from edgeprune.errors import BadInput
from edgeprune.metrics import evaluate
from edgeprune.models import MODELS, SelectShortcut, load_model
from tests.conftest import needs_shared_data
from tests.tiny import tiny_npz


@pytest.mark.parametrize("name", MODELS.names())
def test_registered_models_load_pretrained(name: str) -> None:
    m = load_model(name)
    assert m(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_select_shortcut_is_option_a() -> None:
    s = SelectShortcut(16, 32, 2, 8)
    x = torch.randn(2, 16, 8, 8)
    assert torch.equal(s(x), F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 8, 8)))


def test_embedded_data_and_accuracy() -> None:
    d = load_data("cifar10-demo")
    assert d.train.images.shape == (10000, 32, 32, 3) and d.test.images.shape == (2000, 32, 32, 3)
    assert np.bincount(d.test.labels).tolist() == [200] * 10
    # the shared README measured 81.0% on the full JPEG test set; the subset is close
    acc = evaluate(load_model("resnet20-cifar10"), d.test, limit=1000)
    assert 75.0 < acc < 88.0


@needs_shared_data("cifar10-jpeg/cifar10-jpeg.npz")
def test_full_data_from_shared() -> None:
    d = load_data("cifar10-full")
    assert len(d.train) == 50000 and len(d.test) == 10000
    # the shared train split is stored class by class: calibration must not take its first images
    assert len(set(d.train.labels[:256].tolist())) == 1
    x = d.train.sample(256, seed=0)
    assert x.shape == (256, 3, 32, 32)
    assert torch.equal(x, d.train.sample(256, seed=0)) and not torch.equal(x, d.train.sample(256, seed=1))
    idx = np.sort(np.random.default_rng(0).permutation(50000)[:256])
    assert len(set(d.train.labels[idx].tolist())) == 10


def test_evaluate_takes_a_compiled_engine(tmp_path) -> None:
    from edgeprune.compile import compile as emit

    d = load_data("cifar10-demo")
    m = load_model("resnet20-cifar10").eval()
    eng = emit(m, "cpu-ort", tmp_path, d.test.example())
    # the engine is batch-1: evaluate feeds it batches, Engine.run splits them
    assert evaluate(eng, d.test, limit=60, batch_size=25) == pytest.approx(evaluate(m, d.test, limit=60))


def test_npz_and_folder_data(tmp_path) -> None:
    d = load_data(tiny_npz(tmp_path / "t.npz", n=50))
    assert len(d.train) + len(d.test) == 50 and d.input_shape == (1, 3, 16, 16)
    from PIL import Image

    for cls in ("a", "b"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    f = load_data(str(tmp_path / "imgs"))
    assert f.classes == ("a", "b") and len(f.train) + len(f.test) == 10


@pytest.mark.parametrize(
    "spec, message",
    [("nope.npz", "dataset not found"), ("cifar11", "dataset not found")],
)
def test_bad_data(spec: str, message: str) -> None:
    with pytest.raises(BadInput, match=message):
        load_data(spec)


def test_corrupt_and_empty_data(tmp_path) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(BadInput, match="cannot read dataset"):
        load_data(str(bad))
    empty = tmp_path / "empty.npz"
    np.savez(empty, images=np.zeros((0, 8, 8, 3), np.uint8), labels=np.zeros(0, np.int64))
    with pytest.raises(BadInput):
        load_data(str(empty))


def test_model_loaders(tmp_path) -> None:
    m = load_model("tests.tiny:tiny_net")
    path = tmp_path / "m.pt"
    torch.save(m, path)
    assert isinstance(load_model(str(path)), torch.nn.Module)
    with pytest.raises(BadInput, match="model not found"):
        load_model(str(tmp_path / "missing.pt"))
    (tmp_path / "trunc.pt").write_bytes(path.read_bytes()[:100])
    with pytest.raises(BadInput, match="cannot load model file"):
        load_model(str(tmp_path / "trunc.pt"))
    torch.save({"a": 1}, tmp_path / "sd.pt")
    with pytest.raises(BadInput, match="not a full module"):
        load_model(str(tmp_path / "sd.pt"))
    with pytest.raises(BadInput, match="cannot import model factory"):
        load_model("no_such_pkg.mod:fn")


def test_checkpoint_of_another_architecture(tmp_path) -> None:
    from edgeprune.models import WEIGHTS_DIR, CifarResNet, load_cifar_checkpoint

    with pytest.raises(BadInput, match="does not fit"):
        load_cifar_checkpoint(CifarResNet(5), WEIGHTS_DIR / "resnet20-12fca82f.th")
    trunc = tmp_path / "t.th"
    trunc.write_bytes((WEIGHTS_DIR / "resnet20-12fca82f.th").read_bytes()[:5000])
    with pytest.raises(BadInput, match="cannot read checkpoint"):
        load_cifar_checkpoint(CifarResNet(3), trunc)
