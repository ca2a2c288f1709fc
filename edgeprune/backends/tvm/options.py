"""The ``[options]`` a ``backend = "tvm"`` target may set (see :mod:`edgeprune.backends.tvm.runtime`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TvmOptions:
    """Known keys of a tvm target's ``[options]`` table."""

    tvm_target: dict[str, Any] = field(default_factory=lambda: {"kind": "llvm", "mcpu": "native"})
    frontend: str = "torch"  # torch | onnx (the emitter's importer)
    tune_trials: int = 0  # MetaSchedule trial budget for `edgeprune compile` (0 = no tuning)
    tune_trials_per_task: int = 0  # fixed trials per task (0: the budget split by FLOPs)
    tune_min_trials_per_task: int = 8
    tune_minutes: float = 0.0  # wall-clock cap on one tuning run (0 = none); tasks not reached keep default schedules
    tune_workers: int = 2
    tune_weight_prepack: bool = True  # weights re-laid out for the tuned schedules at compile time (local targets)
    use_tuned: bool = True  # untuned compiles (tune_trials = 0) apply the schedules already in the database (or shipped) for this target
    tune_population: int = 0  # evolutionary search population (0: 64, or 256 for tasks with >= 64 trials)
    cross_compiler: str = ""  # e.g. aarch64-linux-gnu-gcc: link a .so; else export a .tar
    request_timeout_s: float = 60.0  # RPC lease behaviour
    session_timeout_s: float = 0.0
    attempts: int = 3
    profile_boards: int = 0  # boards a profile spreads its samples over (0 = every free one with the key)
    emulated: bool = False  # the board is emulated (QEMU): its timings are labelled "emulated" and mean nothing
