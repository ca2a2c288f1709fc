"""The repeatable whole-model protocol (issue 23, item 3): bootstrap interval, adaptive passes, pinning, threads."""
from __future__ import annotations

import os

import pytest

from edgeprune.profile.timing import (
    ModelProtocol,
    bootstrap_ci,
    ci_halfwidth,
    fixed_threads,
    interleaved_rounds,
    pinned,
    round_statistic,
)


class FakeClock:
    """A nanosecond clock that only moves when a fake model runs (deterministic timings)."""

    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now

    def model(self, durations_ms):
        it = iter(durations_ms)

        def run():
            self.now += int(next(it) * 1e6)
        return run


def _proto(**kw) -> ModelProtocol:
    base = {"warmup": 0, "rounds": 3, "runs_per_round": 2, "passes": 2, "max_passes": 6, "ci_target": 0.01, "bootstrap": 200,
                "max_seconds": 1e9, "nice": 0}
    base.update(kw)
    return ModelProtocol(**base)


def test_round_statistics_and_bootstrap_interval():
    assert round_statistic([3.0, 1.0, 2.0], "min") == 1.0
    assert round_statistic([3.0, 1.0, 2.0], "median") == 2.0
    with pytest.raises(ValueError):
        round_statistic([1.0], "mean")
    lo, hi = bootstrap_ci([1.0] * 10)
    assert lo == hi == 1.0
    assert bootstrap_ci([1, 2, 3, 4, 100], seed=3) == bootstrap_ci([1, 2, 3, 4, 100], seed=3)  # deterministic
    assert ci_halfwidth([1.0, 1.0, 1.0]) == 0.0 and ci_halfwidth([1.0, 2.0, 3.0, 4.0]) > 0.1


def test_stable_models_stop_after_the_minimum_passes():
    clock = FakeClock()
    runs = {"a": clock.model([2.0] * 1000), "b": clock.model([1.0] * 1000)}
    t, per_pass = interleaved_rounds(runs, _proto(), clock=clock)
    assert len(per_pass["a"]) == 2  # the interval is zero-width: no extra pass
    assert t["a"].median == pytest.approx(2.0) and t["b"].median == pytest.approx(1.0)
    assert t["a"].ci_low == pytest.approx(2.0) and t["a"].ci_high == pytest.approx(2.0)


def test_a_wide_interval_adds_passes_up_to_the_cap():
    clock = FakeClock()
    # every pass of "noisy" is 10% away from the last: the interval never narrows to 1%
    noisy = [1.0 + 0.1 * ((i // 6) % 2) for i in range(1000)]
    runs = {"noisy": clock.model(noisy), "flat": clock.model([1.0] * 1000)}
    _, per_pass = interleaved_rounds(runs, _proto(), clock=clock)
    assert len(per_pass["noisy"]) == 6 == len(per_pass["flat"])  # max_passes
    # the time cap stops earlier: each pass takes 3 rounds x 2 runs x ~2 ms = 12 ms of fake time
    clock2 = FakeClock()
    runs = {"noisy": clock2.model(noisy), "flat": clock2.model([1.0] * 1000)}
    _, per_pass = interleaved_rounds(runs, _proto(max_seconds=0.03), clock=clock2)
    assert 2 <= len(per_pass["noisy"]) < 6


def test_interval_once_narrow_stops_adding_passes():
    clock = FakeClock()
    # passes 1-2 disagree by 10%, then every pass agrees with the first: the median's interval narrows
    seq = [1.0] * 6 + [1.1] * 6 + [1.0] * 1000
    runs = {"m": clock.model(seq)}
    _, per_pass = interleaved_rounds(runs, _proto(ci_target=0.04, max_passes=12), clock=clock)
    assert 2 < len(per_pass["m"]) < 12


def test_raw_rounds_are_returned_by_pass():
    clock = FakeClock()
    raw: dict = {}
    interleaved_rounds({"m": clock.model([1.0] * 100)}, _proto(), clock=clock, raw_out=raw)
    assert [p for p, _ in raw["m"]] == [0, 0, 0, 1, 1, 1] and all(len(b) == 2 for _, b in raw["m"])


def test_pinning_and_threads_are_restored():
    if not hasattr(os, "sched_getaffinity"):
        with pinned("last") as what:
            assert what == "not pinned"
        return
    before = os.sched_getaffinity(0)
    with pinned("last") as what:
        assert os.sched_getaffinity(0) == {max(before)} and what.startswith("pinned")
    assert os.sched_getaffinity(0) == before
    with pinned("none") as what:
        assert what == "not pinned"
    import torch

    n = torch.get_num_threads()
    old = os.environ.get("OMP_NUM_THREADS")
    with fixed_threads(1):
        assert torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"
    assert torch.get_num_threads() == n and os.environ.get("OMP_NUM_THREADS") == old
