"""``plan()``: channels and bit-widths per group/layer under every budget.

Planning is four steps, one module each: choices (:mod:`edgeprune.plan.choices`:
what may be chosen) -> problem (:func:`edgeprune.plan.costs.build_problem`: what
each choice costs) -> solve (:func:`edgeprune.plan.milp.solve`) -> decode
(:mod:`edgeprune.plan.decode`: the :class:`Plan`).
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from torch import nn

from edgeprune.budget import Budget, DenseContext, Limits
from edgeprune.errors import BadInput
from edgeprune.graph import ChannelGraph, channel_groups
from edgeprune.plan import costs as C
from edgeprune.plan import milp
from edgeprune.plan.choices import DENSE_PRECISION, Choices, build_choices, frozen_groups, group_weights_for
from edgeprune.plan.config import PlanConfig
from edgeprune.plan.decode import SolveStats, decode, failure
from edgeprune.plan.result import SCHEMA, VERSION, GroupPlan, Plan

__all__ = ["SCHEMA", "VERSION", "GroupPlan", "Plan", "PlanConfig", "apply", "frozen_groups", "group_weights_for",
           "plan", "resolve_limits"]


def resolve_limits(budget: Budget, model: nn.Module, graph: ChannelGraph, choices: Choices,
                   dense_costs: Mapping[str, float] | None = None) -> Limits:
    """``budget.resolve`` against this model: each target's dense cost measured (``dense_costs``) or predicted."""
    ctx = DenseContext(model, graph.signatures(), choices.predictors, dict(dense_costs or {}),
                       target_signatures={t: graph.signatures({}, choices.dense_dtypes(t)) for t in choices.predictors})
    return budget.resolve(ctx, choices.targets)


def plan(
    model: nn.Module,
    scores: Mapping[str, Any] | None,
    budget: Budget | Limits | str,
    predictors: Mapping[Any, Any],
    config: PlanConfig | None = None,
    *,
    graph: ChannelGraph | None = None,
    example: Any = None,
    targets: Any = None,
    dense_costs: Mapping[str, float] | None = None,
) -> Plan:
    """Choose per group the kept channels and per layer and target the precision, maximising retained importance.

    ``scores``: ``{group_id: per-channel scores}`` (None = every channel equal; groups
    without scores stay whole). ``budget``: a :class:`~edgeprune.budget.Budget`, its text
    (``latency=0.5x,bytes=2MB``), or :class:`~edgeprune.budget.Limits` already resolved.
    ``predictors``: ``{target name or Target: Predictor or Profile}``; ratios resolve
    against ``dense_costs[target]`` when given (a measured dense latency), else the
    predicted dense cost. ``config``: the knobs (:class:`PlanConfig`). ``targets``:
    Target objects for predictor names without a target file. With several targets the
    channels are one decision and each target picks its own precisions (docs/plan.md).

    Raises :class:`~edgeprune.errors.BudgetMissed` naming the smallest reachable
    value when no choice meets the budget.
    """
    cfg = config or PlanConfig()
    if isinstance(budget, str):
        budget = Budget.parse(budget)
    if graph is None:
        if example is None:
            from edgeprune.graph import example_input

            example = example_input(model)
        graph = channel_groups(model, example)
    choices = build_choices(model, graph, scores, budget, predictors, targets, cfg)
    limits = budget if isinstance(budget, Limits) else resolve_limits(budget, model, graph, choices, dense_costs)
    missing = [t for t in choices.predictors if limits.target(t) is None]
    if missing:
        raise BadInput(f"the limits were resolved without target {missing[0]!r}")
    t0, c0 = time.perf_counter(), time.process_time()
    problem = C.build_problem(model, graph, choices, limits.limited())
    stats = SolveStats(time.perf_counter() - t0, time.process_time() - c0)
    sol = milp.solve(problem, time_limit=cfg.time_limit)
    if sol.choice is None:
        err = failure(problem, sol, limits, cfg.time_limit)
        if isinstance(budget, Budget) and (why := ratio_notes(budget, choices, dense_costs)):
            err.args = (f"{err.args[0]} ({why[0]})",)  # the ratio's base is the likely surprise
        raise err
    result = decode(model, graph, choices, problem, sol, limits, cfg, stats)
    if isinstance(budget, Budget):
        result.notes[:0] = ratio_notes(budget, choices, dense_costs)
    return result


def ratio_notes(budget: Budget, choices: Choices, dense_costs: Mapping[str, float] | None = None) -> list[str]:
    """One line per target whose latency ratio ("0.5x") is read against a dense model that is not fp32.

    "Nx" means N times the dense model as the allowed precisions run it: with int8 only, the int8
    dense model, which is already ~2-3x faster than fp32. A user who meant the fp32 model should
    give milliseconds instead; the line says so rather than planning silently against another base.
    """
    notes = []
    for t in choices.predictors:
        lim = budget.latency_for(t)
        if lim is None or not lim.is_ratio or (dense_costs and t in dense_costs):
            continue
        dtypes = sorted(set(choices.dense_dtypes(t).values()) - {DENSE_PRECISION})
        if dtypes:
            notes.append(f"latency={lim} on {t} is {lim.value:g} x the dense model run in {'/'.join(dtypes)} (the widest "
                         f"precision allowed), not in fp32; give the limit in ms to budget against the fp32 model")
    return notes


# --------------------------------------------------------------------------- apply


def apply(model: nn.Module, plan: Plan, example: Any = None) -> nn.Module:
    """A new, physically smaller model: ``prune(model, plan.keep)``, precisions in ``edgeprune_precisions``."""
    from edgeprune.prune import prune

    mods = dict(model.named_modules())
    for gid, g in plan.groups.items():
        m = mods.get(gid)
        if m is None:
            raise BadInput(f"plan group {gid} is not a layer of this model (was the plan made for another model?)")
        size = getattr(m, "out_channels", getattr(m, "out_features", None))
        if size is not None and size != g.size:
            raise BadInput(f"plan group {gid} has {g.size} channels but the model has {size} (plan made for another model?)")
    small = prune(model, plan.keep, example)
    names = {n for n, _ in small.named_modules()}
    small.edgeprune_precisions = {n: p for n, p in plan.precisions.items() if n in names}
    return small
