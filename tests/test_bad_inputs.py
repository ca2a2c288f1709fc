"""Every bad input gets a one-line error, the right exit code, and no partial file."""
from __future__ import annotations

import errno
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeprune.config import Budget
from edgeprune.errors import BadInput, EdgepruneError
from edgeprune.fileio import read_json, write_json, write_text
from edgeprune.graph import channel_groups
from edgeprune.prune import prune
from tests.test_cli import _one_line_error, run_cli
from tests.tiny import tiny_net, tiny_npz


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_any_budget_string_parses_or_fails_cleanly(text: str) -> None:
    try:
        b = Budget.parse(text)
    except BadInput as err:
        assert "\n" not in str(err)
    else:
        assert not b.is_empty() or b.granularity


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_any_json_file_reads_or_fails_cleanly(tmp_path_factory, blob: bytes) -> None:
    p = tmp_path_factory.mktemp("j") / "x.json"
    p.write_bytes(blob)
    try:
        read_json(p)
    except BadInput as err:
        assert "\n" not in str(err)


def test_atomic_write_leaves_nothing_on_failure(tmp_path, monkeypatch) -> None:
    target = tmp_path / "out.json"
    write_json(target, {"a": 1})

    def full_disk(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(BadInput, match="No space left"):
        write_json(target, {"a": 2})
    monkeypatch.undo()
    assert read_json(target) == {"a": 1}  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temp file left


def test_unwritable_output_folder(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(BadInput, match="cannot write"):
        write_text(blocker / "sub" / "report.json", "{}")


def test_serialisation_error_leaves_no_file(tmp_path) -> None:
    with pytest.raises(TypeError):
        write_json(tmp_path / "x.json", {"bad": object()})
    assert list(tmp_path.iterdir()) == []


class DataDependent(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3)
        self.fc = torch.nn.Linear(8, 2)

    def forward(self, x):
        y = self.conv(x)
        if y.sum() > 0:  # data-dependent control flow
            y = y * 2
        return self.fc(y.mean((2, 3)))


class Weird(torch.nn.Module):
    """A layer with parameters edgeprune does not know how to prune."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3)
        self.mix = torch.nn.Bilinear(8, 8, 8)
        self.fc = torch.nn.Linear(8, 2)

    def forward(self, x):
        y = self.conv(x).mean((2, 3))
        return self.fc(self.mix(y, y))


def test_unsupported_layer_is_named() -> None:
    """issue #24: an unknown layer with parameters freezes its groups, naming it, instead of rejecting the model."""
    g = channel_groups(Weird(), torch.randn(1, 3, 8, 8)).group("conv")
    assert not g.prunable and "mix (Bilinear)" in g.reason and "register_layer" in g.reason


def test_group_to_zero_channels_refused() -> None:
    m = tiny_net()
    x = torch.randn(1, 3, 16, 16)
    gid = channel_groups(m, x).prunable[0].id
    with pytest.raises(BadInput, match="zero channels"):
        prune(m, {gid: []}, x)
    with pytest.raises(BadInput, match="out of range"):
        prune(m, {gid: [0, 999]}, x)


def test_labels_out_of_range(tmp_path) -> None:
    import numpy as np

    p = tmp_path / "d.npz"
    np.savez(p, images=np.zeros((20, 16, 16, 3), np.uint8), labels=np.full(20, 42))
    err = _one_line_error(run_cli("compress", "--model", "tests.tiny:tiny_net", "--data", str(p), "--budget", "macs=0.5x"))
    assert "label 42 out of range" in err


@pytest.mark.parametrize("budget, message", [("latency=0ms", "must be positive"), ("latency=-2ms", "must be positive"),
                                             ("macs=2x", "ratio above 1x")])
def test_bad_budget_values_cli(budget: str, message: str) -> None:
    assert message in _one_line_error(run_cli("compress", "--budget", budget))


def test_impossible_budget_exit_1(tmp_path) -> None:
    data = tiny_npz(tmp_path / "d.npz", n=60)
    r = run_cli("compress", "--model", "tests.tiny:tiny_net", "--data", data, "--budget", "macs=0.0001x",
                "--planner", "uniform", "--epochs", "0", "--out", str(tmp_path / "run"))
    err = _one_line_error(r, code=1)
    assert "needs at least" in err and "budget is" in err


def test_nan_scores_are_reported(tmp_path) -> None:
    from edgeprune.importance import importance

    m = tiny_net()
    with torch.no_grad():
        m.conv1.weight[0, 0, 0, 0] = float("nan")
    x = torch.randn(8, 3, 16, 16)
    y = torch.zeros(8, dtype=torch.long)
    with pytest.raises(EdgepruneError, match="non-finite|NaN"):
        importance(m, [(x, y)], "taylor")


def test_data_dependent_control_flow_is_pruned_as_python() -> None:
    """Groups come from an autograd trace of one run, and the pruned model keeps its Python control
    flow, so a data-dependent branch neither breaks grouping nor gets frozen into the pruned model."""
    m = DataDependent().eval()
    x = torch.randn(1, 3, 8, 8)
    g = channel_groups(m, x)
    small = prune(m, {"conv": [0, 1, 2, 3]}, x)
    assert small.conv.out_channels == 4 and small.fc.in_features == 4
    for sign in (1.0, -1.0):  # both branches still run
        assert small(sign * torch.ones(1, 3, 8, 8) * 5).shape == (1, 2)
    assert [grp.id for grp in g.prunable] == ["conv"]


@pytest.mark.parametrize("device, message", [("banana", "bad device 'banana'"), ("meta", "not supported for fine-tuning")]
                         + ([] if torch.cuda.is_available() else [("cuda", "sees no CUDA GPU")]))
def test_bad_train_device_cli(tmp_path, device: str, message: str) -> None:
    # refused before any profiling or planning: the run takes seconds, not minutes
    data = tiny_npz(tmp_path / "d.npz", n=40)
    err = _one_line_error(run_cli("compress", "--model", "tests.tiny:tiny_net", "--data", data, "--budget", "macs=0.5x",
                                  "--train-device", device, "--out", str(tmp_path / "out")))
    assert message in err
    assert not (tmp_path / "out").exists()
