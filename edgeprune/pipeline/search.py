"""Planner search on measurement: one keep ratio for every group (uniform), or the MILP planner re-planned with
a tighter limit while the measured latency misses (milp; ``auto`` means milp).

Latency is in the target backend's unit (ms, or simulated cycles); a candidate's cost is a dict with
``latency``, ``macs``, ``bytes`` (and ``peak_memory`` when that is limited).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from edgeprune.errors import BadInput, BudgetMissed, first_line
from edgeprune.pipeline.context import Run
from edgeprune.pipeline.measure import EngineFile, cost_of
from edgeprune.prune import prune
from edgeprune.prune.granularity import round_channels

_UNITS = {"macs": "MACs", "bytes": "B", "peak_memory": "B"}


def keep_from_counts(graph: Any, scores: dict[str, torch.Tensor], counts: dict[str, int]) -> dict[str, list[int]]:
    """The ``counts[group]`` highest-scoring channels of each group (groups at full size are left out)."""
    keep = {}
    for g in graph.prunable:
        k = counts.get(g.id, g.size)
        if k < g.size:
            idx = torch.argsort(scores[g.id], descending=True, stable=True)[:k]
            keep[g.id] = sorted(int(i) for i in idx)
    return keep


def candidate_cost(run: Run, keep: dict[str, list[int]], precisions: dict[str, str] | None = None,
                   reference: tuple[EngineFile, float] | None = None) -> dict[str, float]:
    """Measured latency (backend unit), MACs, bytes (and peak memory when limited) of one candidate plan.

    With ``reference`` (the dense engine file and the run's dense measurement) the candidate is timed
    interleaved with the dense model and rescaled to that measurement.
    """
    small = prune(run.dense, keep, run.example)
    meter = run.meter
    if reference is not None:
        latency = meter.time_against(small, precisions, *reference)
    else:
        latency = meter.time_model(small, precisions).median
    sigs = None
    if run.limits is not None and run.limits.get("peak_memory") is not None and run.limits["peak_memory"].limit is not None:
        widths = {g.id: len(keep.get(g.id, range(g.size))) for g in run.graph.prunable}
        sigs = run.graph.signatures(widths, precisions or None)
    return {"latency": latency, **cost_of(small, run.example, precisions, sigs)}


def _unit(run: Run, key: str) -> str:
    return run.unit_label if key == "latency" else _UNITS.get(key, "")


def shortfall(run: Run, cost: dict[str, float], limits: dict[str, float]) -> str:
    """Which limits a cost misses, and by how much."""
    return "; ".join(f"needs at least {cost[k]:,.4g} {_unit(run, k)}, budget is {v:,.4g} {_unit(run, k)}"
                     for k, v in limits.items() if cost[k] > v)


def fits(cost: dict[str, float], limits: dict[str, float], margin: float) -> bool:
    """Whether ``cost`` meets every limit (latency to ``margin`` of its limit)."""
    return all(cost[k] <= (margin if k == "latency" else 1.0) * v for k, v in limits.items())


def search_plan(run: Run) -> dict[str, Any]:
    """The plan document of the configured planner (``auto`` = milp)."""
    if run.config.planner == "uniform":
        return plan_uniform(run)
    if run.config.planner in ("auto", "milp"):
        return plan_milp(run)
    raise BadInput(f"unknown planner {run.config.planner!r} (auto, milp, uniform)")


def plan_uniform(run: Run) -> dict[str, Any]:
    """The same keep ratio in every group (rounded to the target's multiple), searched on measured cost."""
    graph, scores, limits = run.graph, run.scores, run.cost_limits()
    mult = run.target.channel_multiple

    def counts(r: float) -> dict[str, int]:
        return {g.id: round_channels(r * g.size, mult, g.size) for g in graph.prunable}

    # the smallest model first: if even one block per group misses, say by how much and stop
    floor_keep = keep_from_counts(graph, scores, counts(0.0))
    floor = candidate_cost(run, floor_keep)
    if not fits(floor, limits, 1.0):
        raise BudgetMissed("budget cannot be met even with one channel block per group: " + shortfall(run, floor, limits))
    lo, hi, best = 0.0, 1.0, (0.0, floor_keep, floor)
    tried = [{"label": "r=0 (floor)", "latency_ms": floor["latency"], "macs": floor["macs"]}]
    with run.ui.progress(f"searching keep ratio on measured latency ({run.unit_label})", total=8) as bar:
        for _ in range(8):
            r = (lo + hi) / 2
            keep = keep_from_counts(graph, scores, counts(r))
            cost = candidate_cost(run, keep)
            if fits(cost, limits, run.margin):
                lo, best = r, (r, keep, cost)
            else:
                hi = r
            bar.advance(1, info=f"r={r:.3f} {cost['latency']:.4g} {run.unit_label}")
            tried.append({"label": f"r={r:.3f}", "latency_ms": cost["latency"], "macs": cost["macs"]})
    r, keep, cost = best
    return {"planner": "uniform", "ratio": r, "keep": keep, "counts": {g.id: len(keep.get(g.id, range(g.size))) for g in graph.prunable},
            "measured": cost, "limits": limits, "candidates": tried, "unit": run.backend.unit}


def load_predictor(run: Run) -> tuple[Any, Path]:
    """The target's latency predictor, from a profile measured on this device.

    In order: this model's profile at this input size (``--profiles``, the user cache, the shipped ones; then
    the size-less legacy file when it prices this model's layers) when it matches this device, finished first
    when an earlier run was interrupted; re-fitted here when it comes from another device of the same ISA
    family; priced by this target's device cost model (``edgeprune profile --target T``) when one exists; else
    measured (written under the sized name). ``allow_foreign_profile`` plans on a foreign profile as it is.
    The profile found is read once.
    """
    from edgeprune.environment import device_fingerprint
    from edgeprune.profile import (
        find_profile,
        load_profile,
        local_profile,
        profile_input_size,
        profile_model_name,
    )
    from edgeprune.profile.device import measured_elsewhere

    cfg, tgt = run.config, run.target
    name = profile_model_name(run.model_name)  # the name `edgeprune profile` and `plan` use
    found = find_profile(tgt.name, name, cfg.profiles, profile_input_size(run.example))
    if found is not None and cfg.allow_foreign_profile:
        prof = load_profile(found, target=tgt, allow_foreign=True)
        if prof.foreign:
            run.ui.log(f"planning on a profile from another device ({'; '.join(prof.foreign)}): --allow-foreign-profile")
        return prof.predictor(), found
    with run.clock.work("measure"):
        prof = _pricing_profile(found, run) if found is not None else None
        stale = found is not None and prof is None
        if found is None or stale:
            priced = _device_model_profile(run)
            if priced is not None:
                return load_profile(priced, target=tgt).predictor(), priced
        if prof is not None and not measured_elsewhere(prof.data, device_fingerprint(tgt)):
            return prof.predictor(), found  # measured here, complete, prices this model: as read
        if stale:  # measured at another input size: measured afresh at this one, under its sized name
            from edgeprune.profile import profile

            path = profile(run.dense, run.example, tgt, model_name=name, profiles=cfg.profiles, ui=run.ui,
                           resume=False).path
        else:
            path = local_profile(run.dense, tgt, name, cfg.profiles, run.ui, run.example)
    return load_profile(path, target=tgt).predictor(), path


def _pricing_profile(path: Path, run: Run) -> Any:
    """The profile in ``path``, read once (another device's too: :attr:`Profile.foreign` says what differs), or
    None (logged) when it cannot price this model's layers as it runs here, e.g. the same model name measured at
    another input size, or when it is unreadable or incomplete (then it is measured afresh)."""
    from edgeprune.profile import load_profile, unpriced_layers

    try:
        prof = load_profile(path, target=run.target, allow_foreign=True)
        why = unpriced_layers(prof, run.dense_signatures())
    except BadInput as err:
        prof, why = None, first_line(err)
    if why is None:
        return prof
    run.ui.log(f"profile {path} does not price this model as it runs here ({why}): pricing it afresh at this input size")
    return None


def _device_model_profile(run: Run) -> Path | None:
    """This model priced by the target's device cost model (a few whole-model measurements), if there is one
    or this model's exhaustive table is too big to measure (then it is built now)."""
    from edgeprune.costmodel.calibrate import price_with_device_model
    from edgeprune.profile import profile_model_name
    from edgeprune.profile.profiler import exhaustive_size

    return price_with_device_model(run.dense, run.example, run.target,
                                   configurations=exhaustive_size(run.graph, run.target),
                                   model_name=profile_model_name(run.model_name), profiles=run.config.profiles, ui=run.ui)


def _series(run: Run, latency_limited: bool) -> tuple[list[list[str]], bool]:
    """The precision sets to plan with, in order, and whether to fall back to fp32 only."""
    precisions = list(run.config.precisions or run.target.precisions)
    series = [precisions]
    if "int8" in precisions and len(precisions) > 1 and latency_limited:
        # the tables price each layer's precision but not the Q/DQ boundaries between fp32 and int8 layers
        # (docs/plan.md): also plan with every layer int8, which has none, and keep the better measured plan
        series.append(["int8"])
    # int8 plans can all miss on measurement where the int8 kernels hit a floor (ResNet-20 on ORT: pruned int8 models
    # ran no faster than the unpruned int8 one), while an fp32 plan would fit: then plan fp32 only as well
    return series, "fp32" in precisions and "int8" in precisions and latency_limited


def plan_milp(run: Run) -> dict[str, Any]:
    """The exact planner on the target's latency table; re-planned with a tighter limit while measurement misses."""
    limits = run.cost_limits()
    pred, path = load_predictor(run)
    # the table was measured on another day (or a busier machine) than this run's dense measurement:
    # plan in the predictor's own scale, translating the measured limit by the dense model's ratio
    pred_dense = pred.model_cost(run.dense_signatures())
    to_pred = pred_dense / run.dense_latency
    search = _MilpSearch(run, pred, pred_dense, to_pred, limits)
    series, fp32_fallback = _series(run, "latency" in limits)
    with tempfile.TemporaryDirectory(prefix="edgeprune-plan-") as work:
        dense_file = run.meter.engine_file(run.dense, None, Path(work), name="dense")  # once, for every attempt
        for precs in series:
            search.run_series(precs, len(series) > 1, (dense_file, run.dense_latency), extra=precs is not series[0])
            if search.best is None and fp32_fallback and precs is series[-1] and ["fp32"] not in series:
                series.append(["fp32"])
    p, keep, cost = search.result()
    doc = p.to_dict()
    doc.update({"planner": "milp", "keep": keep, "measured": cost, "limits": limits, "attempts": search.attempts,
                "series": search.series,
                "profile": str(path), "unit": run.backend.unit})
    return doc


class _MilpSearch:
    """The measured re-planning loop: attempts, the best plan that fits, the solver's errors."""

    def __init__(self, run: Run, pred: Any, pred_dense: float, to_pred: float, limits: dict[str, float]) -> None:
        self.run, self.pred, self.pred_dense, self.to_pred, self.limits = run, pred, pred_dense, to_pred, limits
        self.attempts: list[dict[str, Any]] = []
        self.best: tuple[Any, dict[str, list[int]], dict[str, float]] | None = None
        self.errors: list[BudgetMissed] = []  # the first series offers every precision: its error names the true minimum
        self.series: list[dict[str, Any]] = []  # how each precision series ended (logged; in plan.json)

    def solve(self, precs: list[str], scale: float) -> Any:
        """One MILP plan with the latency limit at ``scale`` of the measured limit, in the predictor's scale."""
        from edgeprune.plan import PlanConfig
        from edgeprune.plan import plan as solve

        run, key = self.run, f"lat:{self.run.target.name}"
        b = run.limits.rebased(key, self.pred_dense)  # in the predictor's scale, aimed at limit x scale
        b = b.with_limit(key, self.limits["latency"] * self.to_pred * scale if "latency" in self.limits else None)
        cfg = PlanConfig(precisions=precs, model_name=run.model_name, weighting=run.config.weighting,
                         max_prune=run.config.max_prune, time_limit=run.config.time_limit)
        with run.clock.work("solve"):
            return solve(run.dense, run.scores, b, {run.target.name: self.pred}, cfg, graph=run.graph,
                         example=run.example, targets=[run.target])

    def run_series(self, precs: list[str], several: bool, reference: tuple[EngineFile, float], extra: bool = False) -> None:
        """Plan with precisions ``precs`` until a measured plan lands within the margin (or nothing new comes).

        How the series ended is logged and kept in :attr:`series` (plan.json), an empty one included.
        ``extra``: a series planned besides the first (every layer int8, fp32 only), which a
        predictor that cannot price it skips with a message instead of failing the run.
        """
        run, cfg, limits = self.run, self.run.config, self.limits
        only = " (every layer int8)" if precs == ["int8"] and several else " (fp32 only)" if precs == ["fp32"] and several else ""
        name = f"series {'/'.join(precs)}{only}"
        scale, seen, start = run.margin, set(), len(self.attempts)

        def end(why: str) -> None:
            n = len(self.attempts) - start
            self.series.append({"precisions": list(precs), "plans": n, "ended": why})
            run.ui.log(f"  {name}: {n} plan(s) measured; {why}" if n else f"  {name}: no plan: {why}")

        for _ in range(cfg.max_attempts):
            try:
                p = self.solve(precs, scale)
            except BudgetMissed as err:  # no tighter plan with these precisions: try the next series
                self.errors.append(err)
                end(f"no {'tighter ' if len(self.attempts) > start else ''}plan meets the limit ({first_line(err)})")
                return
            except BadInput as err:
                if not extra:
                    raise
                end(f"the latency table cannot price it ({first_line(err)})")
                return
            if p.solver.get("time_limited") or p.solver.get("status") == "feasible":
                run.ui.log(f"  [yellow]{name}: the solver hit its {cfg.time_limit:g} s time limit (--time-limit): "
                           "the plan is not proven optimal[/]")
            keep = {gid: list(map(int, idx)) for gid, idx in p.keep.items()}
            key = (tuple(sorted((g, tuple(k)) for g, k in keep.items())), tuple(sorted(p.precisions.items())))
            if key in seen:  # the solver returned a plan this series already measured: nothing new to learn
                end("the solver returned a plan already measured")
                return
            seen.add(key)
            cost = candidate_cost(run, keep, dict(p.precisions), reference)
            self._record(p, cost, scale, f"plan {len(self.attempts) + 1}{only}")
            if "latency" not in limits:
                self.best = (p, keep, cost)
                end("no latency limit: the first plan is the plan")
                return
            if fits(cost, limits, 1.0) and (self.best is None or p.objective > self.best[0].objective):
                self.best = (p, keep, cost)
            # aim the next plan at the margin: tighter when measurement missed, looser when it left
            # more than 10% of the budget unused (the predictor errs both ways; slack costs accuracy)
            ratio = cost["latency"] / limits["latency"]
            if run.margin * 0.9 <= ratio <= 1.0 and fits(cost, limits, 1.0):
                end("measured within the margin")
                return
            scale *= run.margin / max(ratio, 1e-9)
        end(f"stopped after {cfg.max_attempts} attempts")

    def _record(self, p: Any, cost: dict[str, float], scale: float, label: str) -> None:
        run, unit = self.run, self.run.unit_label
        n8 = sum(v == "int8" for v in p.precisions.values())
        predicted = p.targets[run.target.name]["predicted"] / self.to_pred
        self.attempts.append({"scale": scale, "predicted_ms": predicted, "measured_ms": cost["latency"], "unit": run.backend.unit,
                              "solver_s": p.wall_s, "int8_layers": n8, "label": label, "objective": p.objective,
                              "time_limited": bool(p.solver.get("time_limited"))})
        limit = self.limits.get("latency", float("nan"))
        run.ui.log(f"  {label}: {n8} int8 layers, predicted {predicted:.4g} {unit}, measured {cost['latency']:.4g} {unit} "
                   f"(limit {limit:.4g} {unit})")

    def result(self) -> tuple[Any, dict[str, list[int]], dict[str, float]]:
        """The best plan that fits, or :class:`BudgetMissed` saying how close the attempts came."""
        if self.best is not None:
            return self.best
        unit, limit = self.run.unit_label, self.limits.get("latency", float("nan"))
        if self.errors:
            if not self.attempts:  # the solver's figures are in the table's scale: say how it maps to measurement
                run = self.run
                raise BudgetMissed(f"{first_line(self.errors[0])} (the latency table's scale: the dense model measures "
                                   f"{run.dense_latency:,.0f} {unit} and is predicted {self.pred_dense:,.0f})") from None
            last = min(self.attempts, key=lambda a: a["measured_ms"])
            raise BudgetMissed(f"the measured latency misses the budget: best plan measured {last['measured_ms']:.4g} {unit} "
                               f"(predicted {last['predicted_ms']:.4g} {unit}), budget is {limit:.4g} {unit}, and "
                               f"no tighter plan exists ({first_line(self.errors[0])})")
        raise BudgetMissed(f"no plan met the measured latency budget after {len(self.attempts)} attempts "
                           f"(last measured {self.attempts[-1]['measured_ms']:.4g} {unit}, budget {limit:.4g} {unit})")
