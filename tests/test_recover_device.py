"""Fine-tuning on a chosen torch device: the CPU always, a CUDA GPU where one is present.

The CUDA cases skip on machines without a GPU (CI here has none); they ran on
an H200 (see the commit that added them).
"""
from __future__ import annotations

import copy

import pytest
import torch

from edgeprune.data import load_data
from edgeprune.errors import BadInput
from edgeprune.metrics import evaluate
from edgeprune.recover import RecoverConfig, recover
from edgeprune.recover import finetune as ft
from tests.test_recover import crash_after_first_epoch
from tests.tiny import tiny_net, tiny_npz

FAST = RecoverConfig(epochs=3, lr=0.05, batch_size=32, threads=1, bn_batches=2)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine (torch sees none)")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return load_data(tiny_npz(tmp_path_factory.mktemp("tiny") / "tiny.npz", n=300))


def test_resolve_device_defaults_to_the_models_own():
    m = tiny_net()
    assert ft.resolve_device(None, m) == torch.device("cpu")
    assert ft.resolve_device("cpu", m) == torch.device("cpu")
    assert ft.resolve_device(None, torch.nn.Module()) == torch.device("cpu")  # no parameters at all


@pytest.mark.parametrize("spec", ["banana", "meta", "cuda:99"])
def test_bad_devices_are_refused(spec):
    if spec == "cuda:99" and not torch.cuda.is_available():
        spec = "cuda"  # without a GPU every CUDA device is refused
    with pytest.raises(BadInput):
        ft.resolve_device(spec, tiny_net())


def test_bad_backend_is_refused(data):
    with pytest.raises(BadInput, match="backend"):
        recover(tiny_net(), data, config=FAST, backend="carrier-pigeon")


def test_explicit_cpu_equals_default(data):
    a, b = tiny_net(), tiny_net()
    ra = recover(a, data, config=FAST, epochs=1)
    rb = recover(b, data, config=FAST, epochs=1, device="cpu")
    assert [h["loss"] for h in ra.history] == [h["loss"] for h in rb.history]
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


@cuda
def test_cuda_finetune_with_kd_returns_models_home(data):
    teacher = tiny_net()
    recover(teacher, data, config=FAST)
    student = tiny_net()
    before = evaluate(student, data.test)
    r = recover(student, data, teacher=teacher, config=FAST, device="cuda")
    # both come back to the CPU they came from, trained
    assert all(p.device.type == "cpu" for p in student.parameters())
    assert all(p.device.type == "cpu" for p in teacher.parameters())
    assert all(b.device.type == "cpu" for b in student.buffers())
    after = evaluate(student, data.test)
    assert after >= before + 20, (before, after)
    assert r.history[-1]["loss"] < r.history[0]["loss"]


@cuda
def test_cuda_and_cpu_runs_agree(data):
    # the same recipe from the same weights: the kernels differ, the trajectory should not
    a, b = tiny_net(), tiny_net()
    ra = recover(a, data, config=FAST, epochs=2)
    rb = recover(b, data, config=FAST, epochs=2, device="cuda")
    for ha, hb in zip(ra.history, rb.history):
        assert hb["loss"] == pytest.approx(ha["loss"], rel=0.05)
    assert abs(evaluate(a, data.test) - evaluate(b, data.test)) <= 5.0


@cuda
def test_model_already_on_cuda_stays_there(data):
    m = tiny_net().cuda()
    r = recover(m, data, config=FAST, epochs=1, val_fraction=0.2)
    assert all(p.is_cuda for p in m.parameters())
    assert 0 <= r.history[-1]["val_top1"] <= 100
    ft.recalibrate_bn(m, data.train, batch_size=64, batches=2)  # runs where the model is


@cuda
def test_checkpoint_from_cuda_resumes_on_cpu(data, tmp_path, monkeypatch):
    cfg = {"epochs": 2, "checkpoint_dir": str(tmp_path / "ck")}
    crash_after_first_epoch(monkeypatch, lambda: recover(tiny_net(), data, config=FAST, device="cuda", **cfg))
    m = copy.deepcopy(tiny_net())
    r = recover(m, data, config=FAST, device="cpu", **cfg)  # the fingerprint ignores the device
    assert r.resumed_from_step > 0 and r.epochs_run == pytest.approx(2.0)
    assert all(p.device.type == "cpu" for p in m.parameters())
