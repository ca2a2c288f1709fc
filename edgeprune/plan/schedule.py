"""Schedules on top of the planner: one-shot, and iterative (NetAdapt / HALP style).

The iterative schedule shrinks the budget over ``steps`` steps. Each step
re-scores the current (already smaller) model, plans for that step's budget,
removes the channels and optionally fine-tunes briefly. Re-scoring and
fine-tuning are callables, so this module does not depend on
``edgeprune.importance`` or ``edgeprune.recover``.

Step budgets: every limit is first resolved to an absolute value against the
*original* dense model; step ``t`` of ``n`` uses
``dense * (limit / dense) ** (t / n)`` (geometric, the default: each step removes
the same fraction) or ``dense + (limit - dense) * t / n`` (linear, NetAdapt's
constant resource reduction). The last step is exactly the final budget.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from edgeprune.config import Budget, Limit
from edgeprune.errors import BadInput
from edgeprune.plan.plan import Plan, apply, plan

Rescore = Callable[[nn.Module], Mapping[str, Any]]
Finetune = Callable[[nn.Module, int], nn.Module]


@dataclass
class ScheduleResult:
    """The final model, its precisions, and every step's plan (indices of each plan refer to that step's input)."""

    model: nn.Module
    plans: list[Plan]
    budgets: list[Budget]
    original_indices: dict[str, list[int]] = field(default_factory=dict)  # kept channels in the original numbering

    @property
    def plan(self) -> Plan:
        """The last step's plan."""
        return self.plans[-1]

    def composed_plan(self) -> Plan:
        """The final plan with indices mapped back to the original model (valid when no step changed weights)."""
        p = copy.deepcopy(self.plans[-1])
        first = self.plans[0]
        for gid, g in p.groups.items():
            if gid in self.original_indices and gid in first.groups:
                g.indices = list(self.original_indices[gid])
                g.size = first.groups[gid].size
                g.kept = len(g.indices)
        p.notes = list(p.notes) + [f"iterative schedule, {len(self.plans)} steps; indices refer to the original model"]
        return p


def _dense_predicted(model: nn.Module, predictors: Mapping[Any, Any], example: Any) -> dict[str, float]:
    from edgeprune.graph import channel_groups
    from edgeprune.plan.plan import _normalise_predictors

    preds, _ = _normalise_predictors(predictors)
    sigs = channel_groups(model, example).signatures()
    return {t: float(p.model_cost(sigs)) for t, p in preds.items()}


def step_budgets(budget: Budget | str, steps: int, dense: Mapping[str, float], *, units: Mapping[str, str] | None = None,
                 decay: str = "geometric") -> list[Budget]:
    """Absolute per-step budgets ending at ``budget``.

    ``dense`` holds the original model's value of every limited cost: a target
    name per latency limit (in that target's unit, ``units[target]``, default ms)
    and ``model_bytes`` / ``peak_memory`` / ``macs``. Limits in another unit than
    the dense value (e.g. ms against cycles) are left fixed at every step.
    """
    if isinstance(budget, str):
        budget = Budget.parse(budget)
    if steps < 1:
        raise BadInput(f"steps must be >= 1, got {steps}")
    if decay not in ("geometric", "linear"):
        raise BadInput(f"unknown decay {decay!r} (geometric or linear)")
    units = units or {}

    def at(lim: Limit, d: float | None, unit: str, t: int) -> Limit:
        final = lim.resolve(d) if (lim.is_ratio and d is not None) else lim.value
        final_unit = unit if lim.is_ratio else lim.unit
        if d is None or final_unit != unit or d <= 0:
            return Limit(final, final_unit)
        frac = t / steps
        if final >= d:
            v = final
        elif decay == "geometric":
            v = d * (final / d) ** frac
        else:
            v = d + (final - d) * frac
        return Limit(v, final_unit)

    out = []
    for t in range(1, steps + 1):
        lat = {}
        names = [n for n in dense if n not in ("model_bytes", "peak_memory", "macs")]
        for name in names:
            lim = budget.latency_for(name)
            if lim is not None:
                lat[name] = at(lim, dense[name], units.get(name, "ms"), t)
        if "*" in budget.latency and not names:
            lat["*"] = budget.latency["*"]
        for name, lim in budget.latency.items():
            if name != "*" and name not in lat:
                lat[name] = lim
        kw = {}
        for m, unit in (("model_bytes", "bytes"), ("peak_memory", "bytes"), ("macs", "count")):
            lim = getattr(budget, m)
            if lim is not None:
                kw[m] = at(lim, dense.get(m), unit, t)
        out.append(Budget(latency=lat, granularity=budget.granularity, **kw))
    return out


def one_shot(model: nn.Module, scores: Mapping[str, Any] | Rescore, budget: Budget | str, predictors: Mapping[Any, Any], *,
             example: Any = None, finetune: Finetune | None = None, **plan_kw: Any) -> ScheduleResult:
    """Plan once, remove the channels, then fine-tune once (``finetune(model, 0)``) when given."""
    if callable(scores):
        scores = scores(model)
    p = plan(model, scores, budget, predictors, example=example, **plan_kw)
    small = apply(model, p, example)
    if finetune is not None:
        small = _keep_precisions(finetune(small, 0), small)
    return ScheduleResult(small, [p], [budget if isinstance(budget, Budget) else Budget.parse(budget)],
                          {gid: list(g.indices) for gid, g in p.groups.items()})


def iterative(model: nn.Module, budget: Budget | str, predictors: Mapping[Any, Any], *, rescore: Rescore,
              finetune: Finetune | None = None, steps: int = 4, example: Any = None, decay: str = "geometric",
              dense_costs: Mapping[str, float] | None = None, on_step: Callable[[int, Plan, nn.Module], None] | None = None,
              **plan_kw: Any) -> ScheduleResult:
    """NetAdapt/HALP-style: ``steps`` x (re-score, plan a tighter budget, remove channels, short fine-tune).

    ``rescore(model) -> {group: scores}`` runs on the current model before each
    step; ``finetune(model, step) -> model`` after each step but the last is
    expected to be short (the caller fine-tunes the final model properly), and
    runs after the last step too when given. ``on_step(step, plan, model)`` is
    a progress hook.
    """
    from edgeprune.graph import example_input
    from edgeprune.plan import costs as C
    from edgeprune.plan.plan import _normalise_predictors

    if isinstance(budget, str):
        budget = Budget.parse(budget)
    if example is None:
        example = example_input(model)
    preds, _ = _normalise_predictors(predictors)
    dense: dict[str, float] = dict(_dense_predicted(model, preds, example))
    if dense_costs:
        dense.update({k: float(v) for k, v in dense_costs.items()})
    from edgeprune.graph import channel_groups

    graph0 = channel_groups(model, example)
    sigs = graph0.signatures()
    dense["model_bytes"] = C.total_param_bytes(model)
    dense["macs"] = float(sum(s.macs for s in sigs.values()))
    dense["peak_memory"] = max((C.activation_bytes(s) for s in sigs.values()), default=0.0)
    units = {t: getattr(p, "unit", "ms") for t, p in preds.items()}
    budgets = step_budgets(budget, steps, dense, units=units, decay=decay)
    original = {g.id: list(range(g.size)) for g in graph0.groups}
    plans: list[Plan] = []
    current = model
    kw = dict(plan_kw)
    kw.pop("dense_costs", None)
    for t, b in enumerate(budgets, start=1):
        scores = rescore(current)
        p = plan(current, scores, b, preds, example=example, **kw)
        plans.append(p)
        for gid, g in p.groups.items():
            if gid in original:
                original[gid] = [original[gid][i] for i in g.indices]
        current = apply(current, p, example)
        if finetune is not None:
            current = _keep_precisions(finetune(current, t), current)
        if on_step is not None:
            on_step(t, p, current)
    return ScheduleResult(current, plans, budgets, original)


def _keep_precisions(new: nn.Module, old: nn.Module) -> nn.Module:
    if not hasattr(new, "edgeprune_precisions") and hasattr(old, "edgeprune_precisions"):
        new.edgeprune_precisions = dict(old.edgeprune_precisions)
    return new


__all__ = ["ScheduleResult", "iterative", "one_shot", "step_budgets"]
