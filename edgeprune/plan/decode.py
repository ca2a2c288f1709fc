"""Step 4 of planning: a solver's assignment -> :class:`~edgeprune.plan.result.Plan` (and the error when there is none)."""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from edgeprune.budget import Limits
from edgeprune.errors import BudgetMissed
from edgeprune.graph import ChannelGraph
from edgeprune.plan import costs as C
from edgeprune.plan import milp
from edgeprune.plan.choices import Choices, unit_of
from edgeprune.plan.config import PlanConfig
from edgeprune.plan.result import GroupPlan, Plan


@dataclass(frozen=True)
class SolveStats:
    """Wall and CPU seconds spent building the tables (the solver reports its own)."""

    build_s: float
    build_cpu_s: float


def chosen(problem: C.Problem, choice: Mapping[int, int], targets: list[str]) -> tuple[dict[str, int], dict[str, dict[str, str]]]:
    """(kept count per group, ``{target: {layer: precision}}``) of an assignment."""
    widths = dict(problem.fixed_widths)
    precs = {t: dict(problem.fixed_precisions.get(t, {})) for t in targets}
    for fi, f in enumerate(problem.factors):
        v = f.values[choice[fi]]
        if f.kind == "group":
            widths[f.key] = v
        else:
            precs[f.target][f.key] = v
    return widths, precs


def _groups(graph: ChannelGraph, ch: Choices, widths: Mapping[str, int]) -> tuple[dict[str, GroupPlan], float]:
    groups: dict[str, GroupPlan] = {}
    importance = 0.0
    for g in graph.groups:
        k = widths[g.id]
        if g.id in ch.blocks:
            u = unit_of(g)
            idx = sorted(j * u + i for j in C.top_indices(ch.blocks[g.id], k // u) for i in range(u))
            r = float(C.retained_curve(ch.blocks[g.id], [k // u])[0])
        else:
            idx, r = list(range(g.size)), 1.0
        importance += r * float(ch.weights.get(g.id, 1.0))
        groups[g.id] = GroupPlan(g.id, g.size, k, idx, g.id in ch.frozen, r)
    return groups, importance


def _targets(graph: ChannelGraph, ch: Choices, limits: Limits, sigs: Mapping[str, Mapping[str, Any]], totals: Mapping[str, float],
             notes: list[str]) -> tuple[dict[str, dict[str, Any]], bool]:
    out: dict[str, dict[str, Any]] = {}
    feasible = True
    for name, pred in ch.predictors.items():
        e = limits.target(name)
        unit = getattr(pred, "unit", "ms")
        dense_predicted = e.dense_predicted
        if dense_predicted is None:
            dense_predicted = float(pred.model_cost(graph.signatures({}, ch.dense_dtypes(name))))
        info = {"unit": unit, "limit": e.limit, "dense": e.dense, "dense_predicted": dense_predicted,
                "dense_source": e.dense_source, "budget": e.budget, "metric": e.metric}
        if unit == "cycles":
            info["simulated"] = True
        info["predicted"] = float(pred.model_cost(sigs[name]))
        tabled = float(totals[f"lat:{name}"])
        if not math.isclose(info["predicted"], tabled, rel_tol=1e-6, abs_tol=1e-9):
            notes.append(f"the {name} predictor is not additive over layers: the solver's cost {tabled:.6g} differs "
                         f"from model_cost {info['predicted']:.6g}")
        if info["limit"] is not None and info["predicted"] > info["limit"] * (1 + 1e-6):
            feasible = False
            notes.append(f"{e.describe()} {e.format(info['predicted'])} exceeds the budget {e.format(info['limit'])}")
        out[name] = info
    return out, feasible


def decode(model: nn.Module, graph: ChannelGraph, ch: Choices, problem: C.Problem, sol: milp.Solution,
           limits: Limits, cfg: PlanConfig, stats: SolveStats) -> Plan:
    """The plan of a solved problem: groups kept, precisions per target, predicted costs against the limits."""
    obj, totals = C.evaluate(problem, sol.choice)
    targets = list(ch.predictors)
    widths, precs = chosen(problem, sol.choice, targets)
    groups, importance = _groups(graph, ch, widths)
    sigs = {t: graph.signatures(widths, precs[t]) for t in targets}
    primary = ch.primary
    layers = {}
    for name, info in graph.layers.items():
        s = sigs[primary][name]
        layers[name] = {"precision": s.dtype, "in_channels": s.in_channels, "out_channels": s.out_channels,
                        "in_group": info.in_group, "out_group": info.out_group,
                        "cost": {t: C.safe_cost(p.layer_cost, sigs[t][name]) for t, p in ch.predictors.items()}}
        if len(targets) > 1:
            layers[name]["precisions"] = {t: precs[t][name] for t in targets}
    notes: list[str] = []
    target_info, feasible = _targets(graph, ch, limits, sigs, totals, notes)
    metrics_out = {e.metric: {"predicted": float(totals[e.key]), "limit": e.limit, "dense": e.dense}
                   for e in limits.entries if e.target is None and e.key in totals}
    solver = {"name": "milp-highs", "status": sol.status, "wall_s": sol.wall_s + stats.build_s, "solve_s": sol.wall_s,
              "build_s": stats.build_s, "cpu_s": sol.cpu_s + stats.build_cpu_s, "mip_gap": sol.gap,
              "variables": sol.variables, "constraints": sol.constraints, "time_limit_s": cfg.time_limit,
              "bitwidth_cost": ch.penalty_source,
              "weighting": cfg.weighting if cfg.group_weights is None else "given", "max_prune": cfg.max_prune,
              "search": sol.search, "time_limited": sol.time_limited}
    notes += search_notes(sol, cfg.time_limit)
    return Plan(
        groups=groups,
        precisions={n: precs[primary].get(n, graph.layers[n].signature.dtype) for n in graph.layers},
        layers=layers, targets=target_info, metrics=metrics_out,
        objective=float(obj), importance=float(importance), quant_penalty=float(importance - obj), solver=solver,
        feasible=feasible, budget=limits.budget, granularity=ch.granularity, allowed_precisions=ch.allowed(),
        model=cfg.model_name or type(model).__name__, notes=notes,
        precisions_by_target={t: dict(precs[t]) for t in targets} if len(targets) > 1 else {},
    )


def search_notes(sol: milp.Solution, time_limit: float) -> list[str]:
    """What the plan's notes must say about how it was found: a time limit that cut the search short, a partial search."""
    out = []
    if sol.time_limited:
        gap = f" (gap {sol.gap:.2%})" if sol.gap is not None and math.isfinite(sol.gap) else ""
        out.append(f"the solver stopped at its {time_limit:g} s time limit: the plan meets the budget but is not proven "
                   f"optimal{gap}; raise --time-limit")
    if sol.search != "exact":
        out.append(f"searched {sol.search}")
    return out


def failure(problem: C.Problem, sol: milp.Solution, limits: Limits, time_limit: float) -> BudgetMissed:
    """The error for a solve without a plan: timeout, solver error, or the smallest reachable value of each limit."""
    if sol.status == "timeout":
        return BudgetMissed(f"the solver found no plan within {time_limit:g} s (raise --time-limit or coarsen the granularity)")
    if sol.status == "error":
        return BudgetMissed(f"the solver failed: {sol.message}")
    parts, reachable = [], {}
    for key, limit in limits.limited().items():
        e = limits[key]
        best = milp.minimum(problem, key, time_limit)
        reachable[key] = best
        if best > limit * (1 + 1e-9):
            parts.append(f"smallest {e.describe()} is {e.format(best)}, budget is {e.format(limit)}")
    if not parts:
        each = "; ".join(f"{limits[k].describe()} >= {limits[k].format(v)}" for k, v in reachable.items())
        parts = [f"each limit is reachable alone but not all at once ({each})"]
    err = BudgetMissed("; ".join(parts))
    err.reachable = reachable  # type: ignore[attr-defined]
    return err
