"""Recovery: fine-tuning improves a tiny model, resumes from a checkpoint, distils, stops early."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from edgeprune.data import load_data
from edgeprune.errors import BadInput
from edgeprune.metrics import evaluate
from edgeprune.recover import RecoverConfig, recover
from edgeprune.recover import finetune as ft
from edgeprune.recover.augment import BatchLoader, Normaliser, random_crop_flip
from tests.tiny import tiny_net, tiny_npz

# one intra-op thread: on a loaded 2-core machine two threads ran 10x slower (docs/recover.md)
FAST = RecoverConfig(epochs=3, lr=0.05, batch_size=32, threads=1, bn_batches=2)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return load_data(tiny_npz(tmp_path_factory.mktemp("tiny") / "tiny.npz", n=300))


@pytest.fixture(scope="module")
def trained(data):
    m = tiny_net()
    before = evaluate(m, data.test)
    r = recover(m, data, config=FAST)
    return m, before, r


def test_finetune_improves_accuracy(data, trained):
    m, before, r = trained
    after = evaluate(m, data.test)
    assert after >= before + 20, (before, after)
    assert r.epochs_run == pytest.approx(3.0)
    assert len(r.history) == 3 and all(np.isfinite(h["loss"]) for h in r.history)
    assert r.history[-1]["loss"] < r.history[0]["loss"]
    assert r.images_per_s > 0 and 0 <= r.data_wait_fraction < 1
    assert not m.training


def crash_after_first_epoch(monkeypatch, run) -> None:
    """Call ``run`` (a fine-tune) so that it dies right after writing its first checkpoint."""
    real = ft._checkpoint

    def crash_after_first(*a, **k):
        real(*a, **k)
        raise KeyboardInterrupt("simulated crash after epoch 1")

    monkeypatch.setattr(ft, "_checkpoint", crash_after_first)
    with pytest.raises(KeyboardInterrupt):
        run()
    monkeypatch.setattr(ft, "_checkpoint", real)


def test_resume_continues_from_checkpoint(data, tmp_path, monkeypatch):
    cfg = FAST.__class__(**{**vars(FAST), "epochs": 2, "checkpoint_dir": str(tmp_path / "ck")})
    ref = tiny_net()
    recover(ref, data, config=FAST.__class__(**{**vars(cfg), "checkpoint_dir": None}))

    crash_after_first_epoch(monkeypatch, lambda: recover(tiny_net(), data, config=cfg))
    assert (tmp_path / "ck" / ft.CHECKPOINT).exists()

    resumed = tiny_net()
    r = recover(resumed, data, config=cfg)
    steps_per_epoch = len(data.train) // cfg.batch_size
    assert r.resumed_from_step == steps_per_epoch
    assert [h["step"] for h in r.history] == [steps_per_epoch, 2 * steps_per_epoch]
    for (k, a), b in zip(ref.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), k

    # a checkpoint of another starting model is not resumed
    other = tiny_net()
    with torch.no_grad():
        other.fc.weight.add_(0.01)
    r2 = recover(other, data, config=FAST.__class__(**{**vars(cfg), "epochs": 1}))
    assert r2.resumed_from_step == 0


def test_kd_moves_student_towards_teacher(data, trained):
    teacher = trained[0]
    student = tiny_net()

    def agreement(m):
        with torch.no_grad():
            x = Normaliser(data.test.mean, data.test.std)(data.test.images)
            return float((m.eval()(x).argmax(1) == teacher(x).argmax(1)).float().mean())

    before = agreement(student)
    r = recover(student, data, teacher=teacher, config=FAST, kd_alpha=1.0, temperature=2.0)
    assert all(np.isfinite(h["loss"]) for h in r.history)
    assert agreement(student) > before + 0.2
    assert all(not p.requires_grad for p in teacher.parameters())


def test_early_stop_triggers(data):
    m = tiny_net()
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.momentum = 0.0  # frozen statistics: the model cannot get better
    r = recover(m, data, config=FAST, epochs=10, lr=1e-9, momentum=0.0, weight_decay=0.0, bn_recalibrate=False,
                val_fraction=0.2, patience=1)
    assert r.stopped_early
    assert r.epochs_run == pytest.approx(3.0)  # epoch 1 best, 2 and 3 not better, patience 1
    assert all("val_top1" in h for h in r.history)


def test_fine_tunes_on_the_free_cores_when_the_machine_is_busy(data, monkeypatch, capsys):
    """threads unset: other processes keep a core busy -> one torch thread while training (logged), restored after;
    an explicit RecoverConfig.threads is obeyed as it is."""
    from edgeprune import environment
    from edgeprune.ui import UI

    seen = []
    monkeypatch.setattr(environment, "free_threads", lambda wanted, interval=0.3: (1, 1.0))
    torch.set_num_threads(2)

    def loss(outputs, targets):
        seen.append(torch.get_num_threads())
        return torch.nn.functional.cross_entropy(outputs, targets)

    try:
        recover(tiny_net(), data, config=FAST, threads=None, epochs=1, bn_recalibrate=False, loss_fn=loss, ui=UI())
        assert set(seen) == {1} and torch.get_num_threads() == 2
        assert "fine-tuning on 1 torch thread(s), not 2" in " ".join(capsys.readouterr().err.split())
        seen.clear()
        recover(tiny_net(), data, config=FAST, threads=2, epochs=1, bn_recalibrate=False, loss_fn=loss)
        assert set(seen) == {2}
    finally:
        torch.set_num_threads(1)


def test_recalibrate_bn_resets_and_restores(data):
    m = tiny_net()
    with torch.no_grad():
        m.bn2.running_mean.fill_(5.0)
    ft.recalibrate_bn(m, data.train, batch_size=64, batches=2)
    assert float(m.bn2.running_mean.abs().max()) < 5.0
    assert m.bn2.momentum == 0.1 and not m.training


def test_loader_shards_and_normalises(data):
    imgs, labels = data.train.images, data.train.labels
    x_ref = data.train.normalise(imgs[:7])
    assert torch.allclose(Normaliser(data.train.mean, data.train.std)(imgs[:7]), x_ref, atol=1e-5)
    seen = []
    for rank in range(3):
        ld = BatchLoader(imgs, labels, data.train.mean, data.train.std, 30, 200, np.random.default_rng(4),
                         augment=False, rank=rank, world=3, prefetch=rank)  # prefetch 0, 1, 2
        batches = list(ld.epoch())
        assert len(batches) == 200 // 30 and all(len(b[1]) == 10 for b in batches)
        seen.append(torch.cat([b[1] for b in batches]))
    assert sum(len(s) for s in seen) == 30 * (200 // 30)
    out = random_crop_flip(imgs[:16], np.random.default_rng(0))
    assert out.shape == imgs[:16].shape and out.dtype == np.uint8


def test_bad_options(data):
    with pytest.raises(BadInput):
        recover(tiny_net(), data, config=FAST, no_such_option=1)
    with pytest.raises(BadInput):
        recover(tiny_net(), data, config=FAST, lr=-1.0)
    with pytest.raises(BadInput):
        recover(tiny_net(), data, config=FAST, distributed="maybe")
    with pytest.raises(BadInput, match="memory_format"):
        recover(tiny_net(), data, config=FAST, memory_format="nhwc")


def test_channels_last_trains_the_same_model_and_gives_it_back_contiguous(data):
    """memory_format only changes the layout: the same fp32 run (to rounding), weights handed back NCHW-contiguous."""
    runs = {}
    for fmt in ("contiguous", "channels_last"):
        m = tiny_net()
        teacher = tiny_net()
        r = recover(m, data, teacher, config=FAST, epochs=1, memory_format=fmt)
        runs[fmt] = (m, r)
        assert all(p.is_contiguous() for p in m.parameters()) and all(p.is_contiguous() for p in teacher.parameters())
    (a, ra), (b, rb) = runs["contiguous"], runs["channels_last"]
    assert ra.history[0]["loss"] == pytest.approx(rb.history[0]["loss"], rel=1e-3)
    for (k, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(pa, pb, atol=1e-3, rtol=1e-3), (k, (pa - pb).abs().max())
    assert ft._channels_last("auto", a) and not ft._channels_last("auto", torch.nn.Linear(3, 2))


def test_diverging_run_fails_clearly(data):
    from edgeprune.errors import EdgepruneError

    with pytest.raises(EdgepruneError, match="diverged"):
        recover(copy.deepcopy(tiny_net()), data, config=FAST, lr=1e12, epochs=2)


def test_bn_statistics_are_re_estimated_after_fine_tuning(data):
    """bn_final: the running statistics match the final weights, not a lagging average (a low BN momentum lags most)."""
    runs = {}
    for final in (True, False):
        m = tiny_net()
        for bn in m.modules():
            if isinstance(bn, torch.nn.BatchNorm2d):
                bn.momentum = 0.001  # EfficientNet-Lite's is 0.01: its averages barely follow a short fine-tune
        recover(m, data, config=FAST, epochs=1, bn_final=final)
        runs[final] = m
    fresh = copy.deepcopy(runs[True])
    ft.recalibrate_bn(fresh, data.train, batch_size=min(256, len(data.train)), batches=FAST.bn_batches, seed=FAST.seed + 1)
    assert torch.allclose(fresh.bn2.running_mean, runs[True].bn2.running_mean, atol=1e-4)  # recover ran it in NHWC
    assert not torch.allclose(runs[False].bn2.running_mean, runs[True].bn2.running_mean, atol=1e-3)
    assert evaluate(runs[True], data.test) >= evaluate(runs[False], data.test)


class _FlattensWithView(torch.nn.Module):
    """A conv net that flattens its feature map with .view, which channels_last memory cannot do."""

    def __init__(self, side: int) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(4)
        self.fc = torch.nn.Linear(4 * side * side, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.conv(x)))
        return self.fc(y.view(y.size(0), -1))


def test_a_model_that_cannot_run_channels_last_trains_contiguous(data, capsys):
    from edgeprune.ui import UI

    side = data.train.images.shape[1]
    torch.manual_seed(0)
    m = _FlattensWithView(side)
    torch.manual_seed(0)
    ref = _FlattensWithView(side)
    r = recover(m, data, copy.deepcopy(ref), config=FAST, epochs=1, ui=UI())
    recover(ref, data, copy.deepcopy(ref), config=FAST, epochs=1, memory_format="contiguous")
    said = capsys.readouterr()
    assert "contiguous memory" in said.out + said.err
    assert r.history and all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), ref.state_dict().values()))
