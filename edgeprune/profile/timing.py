"""The timing protocol shared by every backend: warm-up, then repeats until the median is stable."""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class TimingProtocol:
    """How to time one executable.

    Runs ``warmup`` untimed calls, then timed calls in rounds of ``round_size``
    until the median of all samples moved less than ``rel_tol`` over the last
    round (and at least ``min_runs`` were taken), or ``max_runs`` / ``max_seconds``
    is reached.
    """

    warmup: int = 20
    min_runs: int = 50
    max_runs: int = 1000
    round_size: int = 25
    rel_tol: float = 0.01
    max_seconds: float = 5.0

    @classmethod
    def quick(cls) -> "TimingProtocol":
        """A short protocol for tests and smoke runs."""
        return cls(warmup=3, min_runs=10, max_runs=40, round_size=10, rel_tol=0.05, max_seconds=1.0)


@dataclass(frozen=True)
class Timing:
    """Summary of one measurement (milliseconds, or cycles for simulated targets)."""

    median: float
    p10: float
    p90: float
    count: int
    unit: str = "ms"

    def to_dict(self) -> dict:
        """JSON-friendly dict."""
        return asdict(self)

    @classmethod
    def from_samples(cls, samples: list[float], unit: str = "ms") -> "Timing":
        """Summarise raw samples."""
        arr = np.asarray(samples, dtype=np.float64)
        return cls(float(np.median(arr)), float(np.percentile(arr, 10)), float(np.percentile(arr, 90)), len(arr), unit)


def measure(run: Callable[[], object], protocol: TimingProtocol = TimingProtocol()) -> Timing:
    """Time ``run()`` (wall clock, ms) with ``protocol``."""
    for _ in range(protocol.warmup):
        run()
    samples: list[float] = []
    start = time.perf_counter()
    last_median = None
    while len(samples) < protocol.max_runs:
        for _ in range(protocol.round_size):
            t0 = time.perf_counter_ns()
            run()
            samples.append((time.perf_counter_ns() - t0) / 1e6)
        med = statistics.median(samples)
        if len(samples) >= protocol.min_runs:
            if last_median is not None and abs(med - last_median) <= protocol.rel_tol * last_median:
                break
            if time.perf_counter() - start > protocol.max_seconds:
                break
        last_median = med
    return Timing.from_samples(samples)


def interleaved(runs: dict[str, Callable[[], object]], protocol: TimingProtocol, repeats: int = 3) -> dict[str, Timing]:
    """Time several executables interleaved, ``repeats`` times each; report each one's median of medians.

    Comparing models measured minutes apart on a noisy machine is unfair to
    whichever ran during a burst; interleaving spreads that noise over all of them.
    """
    per: dict[str, list[Timing]] = {k: [] for k in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            per[name].append(measure(fn, protocol))
    out = {}
    for name, ts in per.items():
        meds = sorted(t.median for t in ts)
        out[name] = Timing(
            float(np.median(meds)),
            float(np.median([t.p10 for t in ts])),
            float(np.median([t.p90 for t in ts])),
            sum(t.count for t in ts),
        )
    return out
