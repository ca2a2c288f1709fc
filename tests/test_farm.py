"""The runner pool (edgeprune.profile.farm) with fake runners: no tvm, no boards, fast.

The real board farm (two RPC servers behind a tracker, one killed mid-run) is in tests/test_tvm.py.
"""
from __future__ import annotations

import threading
import time

import pytest

from edgeprune.errors import BackendUnavailable
from edgeprune.graph.signature import LayerSignature
from edgeprune.profile.farm import RunnerLost, RunnerPool, measure_all
from edgeprune.profile.timing import Timing


def _sigs(n: int) -> list[LayerSignature]:
    return [LayerSignature("conv2d", 8 + i, 16, (3, 3), (1, 1), (1, 1), 1, (8, 8)) for i in range(n)]


class Fake:
    """A runner that takes ``delay`` seconds per sample and dies (RunnerLost) on its ``die_at``-th sample."""

    def __init__(self, name: str, delay: float = 0.01, die_at: int | None = None) -> None:
        self.name, self.delay, self.die_at = name, delay, die_at
        self.measured: list[str] = []
        self.calls = 0
        self.closed = False

    def time(self, sig):
        self.calls += 1
        time.sleep(self.delay)
        if self.die_at is not None and self.calls >= self.die_at:
            raise RunnerLost(f"{self.name} gone")
        self.measured.append(sig.key())
        return Timing(float(sig.in_channels), 1.0, 1.0, 1), {"board": self.name, "thread": threading.current_thread().name}

    def close(self):
        self.closed = True


def test_single_runner_runs_in_order_in_this_thread():
    sigs = _sigs(5)
    r = Fake("one")
    got = []
    with RunnerPool([r]) as pool:
        n = measure_all(sigs + sigs[:2], pool, lambda s, t, m: got.append((s.key(), m["thread"])))
    assert n == 5 and [k for k, _ in got] == [s.key() for s in sigs]  # deduplicated, in order
    assert {th for _, th in got} == {threading.current_thread().name} and r.closed


def test_two_runners_share_the_queue_and_a_lost_board_loses_nothing():
    sigs = _sigs(20)
    a, b = Fake("a", 0.02, die_at=4), Fake("b", 0.02)
    got: dict[str, int] = {}
    logs = []
    with RunnerPool([a, b]) as pool:
        measure_all(sigs, pool, lambda s, t, m: got.__setitem__(s.key(), got.get(s.key(), 0) + 1), log=logs.append)
    assert set(got) == {s.key() for s in sigs} and set(got.values()) == {1}  # every sample exactly once
    assert len(a.measured) == 3 and len(b.measured) == 17 and not set(a.measured) & set(b.measured)
    assert a.closed and any("a dropped out" in line for line in logs)


def test_pool_replaces_a_lost_runner_and_fails_clearly_when_all_are_gone():
    class Refill(RunnerPool):
        def __init__(self, runners):
            super().__init__(runners)
            self.spare = [Fake("spare")]

        def replace(self, lost, others_alive):
            if not self.spare:
                return None
            self.runners.append(self.spare[-1])
            return self.spare.pop()

    sigs = _sigs(6)
    got = []
    with Refill([Fake("x", die_at=2)]) as pool:
        measure_all(sigs, pool, lambda s, t, m: got.append(m["board"]))
    assert got == ["x", "spare", "spare", "spare", "spare", "spare"]

    with pytest.raises(BackendUnavailable, match="every runner .* lost with 5 of 6 samples left") as err, \
            RunnerPool([Fake("p", die_at=2), Fake("q", die_at=1)]) as pool:
        measure_all(sigs, pool, lambda s, t, m: None)
    assert "\n" not in str(err.value)


def test_a_sample_that_kills_every_board_is_reported_and_errors_propagate():
    class Poison(Fake):
        def time(self, sig):
            if sig.in_channels == 9:
                raise RunnerLost(f"{self.name} crashed")
            return super().time(sig)

    with pytest.raises(BackendUnavailable, match="conv2d 9x16 fp32 failed on 3 runners"), \
            RunnerPool([Poison(f"r{i}") for i in range(4)]) as pool:
        measure_all(_sigs(4), pool, lambda s, t, m: None)

    class Broken(Fake):
        def time(self, sig):
            raise ValueError("a bug, not a lost board")

    with pytest.raises(ValueError, match="a bug"), RunnerPool([Broken("x"), Fake("y", 0.05)]) as pool:
        measure_all(_sigs(6), pool, lambda s, t, m: None)


def test_should_stop_stops_handing_out_samples():
    got = []
    with RunnerPool([Fake("a"), Fake("b")]) as pool:
        measure_all(_sigs(30), pool, lambda s, t, m: got.append(s), should_stop=lambda: len(got) >= 4)
    assert 4 <= len(got) <= 6  # in-flight samples are still delivered, nothing more is handed out


def test_device_model_build_spreads_its_kernels_over_the_backends_pool(tmp_path, monkeypatch):
    """build_device_model with no time_fn measures on Backend.runner_pool: two fake boards, one drops out."""
    from edgeprune.costmodel import BuildConfig, build_device_model
    from edgeprune.profile import profiler
    from tests.test_costmodel import FAST_FIT, SMALL, fake_time

    class Board(Fake):
        def time(self, sig):
            super().time(sig)
            return fake_time(sig)[0], {"board": self.name}

    boards = [Board("a", 0.001, die_at=5), Board("b", 0.001)]

    class FakeBackend:
        unit = "ms"

        def precision_support(self, p):
            return True, ""

        def runner_pool(self, target, protocol, log=None):
            return RunnerPool(boards, "two fake boards")

    monkeypatch.setattr(profiler, "_backend_for", lambda target: FakeBackend())
    dm = build_device_model("cpu-ort", out=tmp_path / "dm.json", resume=False, space=SMALL, fit=FAST_FIT,
                            config=BuildConfig(max_samples=40, budget_s=600))
    measured = boards[0].measured + boards[1].measured
    assert dm.complete and sorted(measured) == sorted(dm.samples) and len(set(measured)) == len(measured)
    assert len(boards[0].measured) == 4 and boards[0].calls == 5  # a lost board is not asked again in later rounds
    assert boards[0].closed and boards[1].closed and len(dm.data["rounds"]) > 1
    assert {r["board"] for r in dm.samples.values()} == {"a", "b"}
