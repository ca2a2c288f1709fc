"""compress picks how to price a model: its own table when small, the device cost model when the table is huge."""
from __future__ import annotations

from types import SimpleNamespace

import torch

from edgeprune.config import get_target
from edgeprune.graph import channel_groups
from edgeprune.models import load_model
from edgeprune.profile.profiler import EXHAUSTIVE_LIMIT, exhaustive_size
from edgeprune.ui import QUIET


def _run(model, shape, tmp_path):
    from edgeprune.config import get_target

    example = torch.zeros(shape)
    tgt = get_target("cpu-ort")
    return SimpleNamespace(graph=channel_groups(model, example), target=tgt, model_name="m", ui=QUIET,
                           config=SimpleNamespace(profiles=str(tmp_path)))


def test_exhaustive_size_counts_the_table_compress_would_measure():
    model = load_model("resnet20-cifar10")
    n = exhaustive_size(channel_groups(model, torch.zeros(1, 3, 32, 32)), get_target("cpu-ort"))
    assert 100 < n < EXHAUSTIVE_LIMIT  # ResNet-20 stays on its exact table


def test_a_huge_table_builds_the_device_model_instead(tmp_path, monkeypatch):
    from edgeprune.costmodel import measure
    from edgeprune.pipeline import search
    from edgeprune.profile import profiler

    built = []
    monkeypatch.setattr(measure, "build_device_model",
                        lambda target, **kw: built.append(target.name) or SimpleNamespace(path=tmp_path / "dm.json"))
    run = _run(load_model("resnet20-cifar10"), (1, 3, 32, 32), tmp_path)
    assert search._build_device_model(run) is None and not built  # small: the exact table
    monkeypatch.setattr(profiler, "EXHAUSTIVE_LIMIT", 10)
    assert search._build_device_model(run) == tmp_path / "dm.json" and built == ["cpu-ort"]


def test_a_profile_of_the_same_model_at_another_size_is_replaced_not_fatal(tmp_path, capsys):
    """A profile found by the model's name but measured at another input size used to stop compress with
    "the profile has no table for layer ... 16x16"; now the model is priced afresh at its size."""
    from edgeprune.cli import main

    d = tmp_path / "profiles"
    common = ["--model", "tests.tiny:tiny_net", "--target", "cpu-ort", "--profiles", str(d), "-q"]
    assert main(["profile", *common, "--input-shape", "1,3,32,32", "--quick"]) == 0
    assert main(["compress", *common, "--data", "none", "--input-shape", "1,3,16,16", "--criterion", "l1",
                 "--budget", "macs=0.6x", "--epochs", "0", "--quick", "--out", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "model.onnx").exists()
