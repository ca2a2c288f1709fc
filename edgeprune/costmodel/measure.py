"""Build a device model: measure sampled kernels, fit, measure more where the cross-validated error is high.

The build runs in rounds. Round 0 draws ``initial`` of the sample budget spread over
the kernel types by :data:`WEIGHTS`; each later round draws ``step`` of it, shared
among the (kernel type, precision) pairs in proportion to ``weight * cv_error``, for
the pairs whose 5-fold cross-validated median error is above ``target_error``
(nn-Meter's adaptive sampler). The build stops at the sample budget, the time budget
or when every pair is under the target. Each round's samples are stored in the file
(``pending``) before they are measured and the file is written every few seconds and
on any interruption, so ``build_device_model(..., resume=True)`` continues an
interrupted build with exactly the samples it would have measured.
"""
from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeprune.costmodel.fit import FitConfig, cv_error
from edgeprune.costmodel.model import (
    DeviceModel,
    check_fingerprint,
    device_model_path,
    new_document,
    validate,
)
from edgeprune.costmodel.space import KERNEL_TYPES, SpaceConfig, sample_round
from edgeprune.errors import BadInput
from edgeprune.graph.signature import LayerSignature
from edgeprune.profile.farm import RunnerPool

if TYPE_CHECKING:
    from edgeprune.config import Target
    from edgeprune.profile.timing import Timing, TimingProtocol
    from edgeprune.ui import UI

#: relative share of the sample budget per kernel type (the planner prices convs; the rest are cheap and smooth)
WEIGHTS = {"conv": 4.0, "conv1x1": 4.0, "dwconv": 3.0, "gconv": 1.0, "linear": 1.0, "pool": 1.0, "se": 1.0, "add": 1.0, "act": 1.5}

SAVE_EVERY_S = 2.0

#: a kernel timed alone is 10 us - 30 ms: the per-layer protocol of the profiler, a little shorter
KERNEL_PROTOCOL_KW = {"warmup": 5, "min_runs": 30, "max_runs": 300, "round_size": 15, "rel_tol": 0.015, "max_seconds": 0.4}

TimeFn = Callable[[LayerSignature], "tuple[Timing, dict]"]


@dataclass(frozen=True)
class BuildConfig:
    """How much to measure: sample and time budgets, and the adaptive sampler's settings."""

    max_samples: int = 1200
    budget_s: float = 18 * 60.0
    initial: float = 0.5  # share of max_samples in round 0
    step: float = 0.1  # share of max_samples per adaptive round
    target_error: float = 0.03  # stop refining a pair once its CV median error is below this
    seed: int = 0


def kernel_protocol() -> TimingProtocol:
    """The timing protocol for one kernel sample."""
    from edgeprune.profile.timing import TimingProtocol

    return TimingProtocol(**KERNEL_PROTOCOL_KW)


def _pairs(precisions: Sequence[str]) -> list[tuple[str, str]]:
    return [(k, d) for d in precisions for k in KERNEL_TYPES]


def _split(total: int, weights: dict[tuple[str, str], float]) -> dict[tuple[str, str], int]:
    s = sum(weights.values()) or 1.0
    return {k: max(1, round(total * w / s)) for k, w in weights.items() if w > 0}


def build_device_model(
    target: Target | str,
    *,
    out: str | Path | None = None,
    profiles: str | Path | None = None,
    resume: bool = True,
    config: BuildConfig = BuildConfig(),
    space: SpaceConfig | None = None,
    fit: FitConfig | None = None,
    protocol: TimingProtocol | None = None,
    time_fn: TimeFn | None = None,
    ui: UI | None = None,
) -> DeviceModel:
    """Measure and fit the device model of ``target``; write it to ``out`` (default :func:`device_model_path`).

    Samples are measured on the backend's runner pool (:meth:`~edgeprune.backends.base.Backend.runner_pool`):
    spread over every free board with the key for a target behind a TVM RPC tracker, this machine otherwise.
    ``time_fn(sig) -> (Timing, meta)`` replaces the backend's runners (tests use a fake);
    ``resume`` continues the file in ``out`` (it must have been measured on this device).
    """
    from edgeprune.config import get_target
    from edgeprune.environment import device_fingerprint
    from edgeprune.fileio import read_json, write_json
    from edgeprune.profile.timing import boosted_priority
    from edgeprune.ui import QUIET

    ui = ui or QUIET
    space, fit = space or SpaceConfig(), fit or FitConfig()
    target = get_target(target)
    out = Path(out) if out else device_model_path(target, profiles)
    t_start = time.perf_counter()
    if time_fn is None:
        from edgeprune.profile.profiler import _backend_for, _supported_precisions

        backend = _backend_for(target)
        precisions, notes = _supported_precisions(target, backend)
        protocol = protocol or kernel_protocol()
        unit = backend.unit

        def make_pool() -> RunnerPool:
            return backend.runner_pool(target, protocol, ui.log)
    else:
        precisions, notes, unit = list(target.precisions), [], "ms"

        def make_pool() -> RunnerPool:
            return RunnerPool([_FnRunner(time_fn)], "time_fn")
    pool: RunnerPool | None = None

    doc = None
    if resume and out.exists():
        doc = read_json(out, "device model")
        validate(doc, out)
        if doc["target"]["name"] != target.name:
            raise BadInput(f"{out} holds a device model of target {doc['target']['name']!r}, not {target.name!r}: choose another --out")
        check_fingerprint(doc["fingerprint"], target, out)
    if doc is None:
        doc = new_document(target, unit, device_fingerprint(target), space, fit, {})
    elif doc["complete"] and (config.max_samples > doc["budget"].get("max_samples", 0)
                              or config.budget_s > doc["budget"].get("budget_s", 0)):
        doc["complete"] = False  # a larger budget than the finished build's: measure more, keep what is there
    doc["budget"] = {"max_samples": config.max_samples, "budget_s": config.budget_s, "target_error": config.target_error}
    for n in notes:
        if n not in doc["notes"]:
            doc["notes"].append(n)
    dm = DeviceModel(doc, out)
    space = SpaceConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in doc["space"].items()})
    multiple = dm.multiple

    def save() -> None:
        doc["updated"] = datetime.now(UTC).isoformat(timespec="seconds")
        write_json(out, doc)

    def spent() -> float:
        return doc["timings_s"]["measure"] + (time.perf_counter() - t_run)

    t_run = time.perf_counter()
    spent_before = doc["timings_s"]["measure"]
    try:
        with boosted_priority(-15 if time_fn is None else 0):
            while not doc["complete"]:
                if not doc["pending"]:
                    nxt = _next_round(dm, precisions, config, space, multiple, spent(), ui)
                    if not nxt:
                        doc["complete"] = True
                        break
                    doc["pending"] = [s.to_dict() for s in nxt]
                    save()
                if pool is None:  # leased once, when there is something to measure
                    pool = make_pool()
                _measure_pending(dm, pool, ui, save, lambda: spent() >= config.budget_s)
                dm.invalidate()
    finally:
        if pool is not None:
            pool.close()
        doc["timings_s"]["measure"] = round(spent_before + time.perf_counter() - t_run, 2)
        doc["timings_s"]["total_this_run"] = round(time.perf_counter() - t_start, 2)
        save()
    if doc["complete"]:
        doc["cv_error"] = {f"{k}/{d}": round(e, 4) for (k, d), e in _cv_errors(dm, precisions).items()}
        save()
    return dm


def _cv_errors(dm: DeviceModel, precisions: Sequence[str]) -> dict[tuple[str, str], float]:
    out = {}
    for kind, dtype in _pairs(precisions):
        sigs, ys = dm.samples_of(kind, dtype)
        if sigs:
            out[(kind, dtype)] = cv_error(sigs, ys, dm.multiple, config=dm.fit_config)
    return out


def _next_round(dm: DeviceModel, precisions: Sequence[str], config: BuildConfig, space: SpaceConfig, multiple: int,
                spent_s: float, ui: UI) -> list[LayerSignature]:
    """The next round's samples (empty: the build is done)."""
    doc = dm.data
    r = len(doc["rounds"])
    have = len(doc["samples"])
    left = config.max_samples - have
    if left <= 0 or (r > 0 and spent_s >= config.budget_s):
        return []
    rng = random.Random(f"{config.seed}/{r}")
    if r == 0:
        weights = {(k, d): WEIGHTS[k] for k, d in _pairs(precisions)}
        counts = _split(min(left, max(1, round(config.max_samples * config.initial))), weights)
        errs: dict[str, float] = {}
    else:
        cv = _cv_errors(dm, precisions)
        errs = {f"{k}/{d}": round(e, 4) for (k, d), e in cv.items()}
        weights = {p: WEIGHTS[p[0]] * e for p, e in cv.items() if e > config.target_error}
        if not weights:
            ui.log(f"device model: every kernel type within {config.target_error:.0%} (cross-validated) after round {r}")
            return []
        step = max(1, round(config.max_samples * config.step))
        # time left: keep a round small enough to finish within the budget (rate from the samples so far)
        if have and spent_s > 0:
            step = min(step, max(1, int((config.budget_s - spent_s) / (spent_s / have))))
        counts = _split(min(left, step), weights)
    sigs = sample_round(counts, rng, multiple, space, skip=list(doc["samples"]))
    doc["rounds"].append({"round": r, "samples": len(sigs), "cv_error_before": errs,
                          "counts": {f"{k}/{d}": n for (k, d), n in counts.items()}})
    if errs:
        worst = sorted(errs.items(), key=lambda kv: -kv[1])[:3]
        ui.log(f"device model round {r}: {len(sigs)} more kernels where the CV error is highest "
               f"({', '.join(f'{k} {v:.1%}' for k, v in worst)})")
    else:
        ui.log(f"device model round 0: {len(sigs)} kernels over {len(counts)} kernel types x precisions")
    return sigs


class _FnRunner:
    """A pool of one around a ``time_fn`` (tests pass a fake)."""

    name = "time_fn"

    def __init__(self, fn: TimeFn) -> None:
        self.fn = fn

    def time(self, sig: LayerSignature) -> tuple[Timing, dict]:
        """``fn(sig)``."""
        return self.fn(sig)

    def close(self) -> None:
        """Nothing to release."""


def _measure_pending(dm: DeviceModel, pool: RunnerPool, ui: UI, save: Callable[[], None],
                     over_budget: Callable[[], bool]) -> None:
    """Measure the round's pending samples on the pool's runners (every free board of a farm), storing each as it comes."""
    from edgeprune.profile.farm import measure_all

    doc = dm.data
    last = time.perf_counter()
    remaining = {LayerSignature.from_dict(d).key(): d for d in doc["pending"]}
    todo = []
    for key, d in list(remaining.items()):
        if key in doc["samples"]:
            del remaining[key]
        else:
            todo.append(LayerSignature.from_dict(d))
    doc["pending"] = list(remaining.values())
    with ui.progress(f"device model round {len(doc['rounds']) - 1}", total=len(todo)) as bar:

        def store(sig: LayerSignature, timing: Timing, meta: dict) -> None:
            nonlocal last
            key = sig.key()
            rec: dict[str, Any] = {"signature": sig.to_dict(), **timing.to_dict()}
            if meta.get("layout"):
                rec["layout"] = meta["layout"]
            if meta.get("board"):
                rec["board"] = meta["board"]
            doc["samples"][key] = rec
            remaining.pop(key, None)
            doc["pending"] = list(remaining.values())
            bar.advance(info=f"{sig.op} {sig.in_channels}x{sig.out_channels} {sig.dtype}")
            if time.perf_counter() - last > SAVE_EVERY_S:
                save()
                last = time.perf_counter()

        if todo and not over_budget():
            measure_all(todo, pool, store, should_stop=over_budget, log=ui.log)
    if remaining and over_budget():
        doc["notes"].append(f"time budget reached: {len(remaining)} sampled kernels left unmeasured")
        doc["pending"] = []
