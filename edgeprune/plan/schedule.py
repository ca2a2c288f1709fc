"""Schedules on top of the planner: one-shot, and iterative (NetAdapt / HALP style).

The iterative schedule shrinks the budget over ``steps`` steps. Each step
re-scores the current (already smaller) model, plans for that step's budget,
removes the channels and optionally fine-tunes briefly. Re-scoring and
fine-tuning are callables, so this module does not depend on
``edgeprune.importance`` or ``edgeprune.recover``.

Step limits: the budget is resolved once (:meth:`edgeprune.budget.Budget.resolve`)
against the *original* dense model; step ``t`` of ``n`` uses
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

from edgeprune.budget import Budget, Limits
from edgeprune.errors import BadInput
from edgeprune.plan.config import PlanConfig
from edgeprune.plan.plan import Plan, apply, plan

Rescore = Callable[[nn.Module], Mapping[str, Any]]
Finetune = Callable[[nn.Module, int], nn.Module]


@dataclass
class ScheduleResult:
    """The final model, its precisions, and every step's plan (indices of each plan refer to that step's input)."""

    model: nn.Module
    plans: list[Plan]
    limits: list[Limits]  # each step's absolute limits
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


def step_limits(limits: Limits, steps: int, decay: str = "geometric") -> list[Limits]:
    """Absolute per-step limits ending at ``limits`` (resolved once against the original dense model)."""
    if steps < 1:
        raise BadInput(f"steps must be >= 1, got {steps}")
    if decay not in ("geometric", "linear"):
        raise BadInput(f"unknown decay {decay!r} (geometric or linear)")
    return [limits.step(t, steps, decay) for t in range(1, steps + 1)]


def _resolve(model: nn.Module, budget: Budget | str, predictors: Mapping[Any, Any], example: Any,
             plan_kw: Mapping[str, Any]) -> Limits:
    from edgeprune.graph import channel_groups
    from edgeprune.plan.choices import build_choices
    from edgeprune.plan.plan import resolve_limits

    if isinstance(budget, str):
        budget = Budget.parse(budget)
    graph = channel_groups(model, example)
    cfg = plan_kw.get("config") or PlanConfig()
    choices = build_choices(model, graph, None, budget, predictors, plan_kw.get("targets"), cfg)
    return resolve_limits(budget, model, graph, choices, plan_kw.get("dense_costs"))


def one_shot(model: nn.Module, scores: Mapping[str, Any] | Rescore, budget: Budget | str, predictors: Mapping[Any, Any], *,
             example: Any = None, finetune: Finetune | None = None, **plan_kw: Any) -> ScheduleResult:
    """Plan once, remove the channels, then fine-tune once (``finetune(model, 0)``) when given.

    ``plan_kw``: :func:`edgeprune.plan.plan`'s keywords (``config``, ``targets``, ``dense_costs``, ``graph``).
    """
    if callable(scores):
        scores = scores(model)
    if example is None:
        from edgeprune.graph import example_input

        example = example_input(model)
    limits = _resolve(model, budget, predictors, example, plan_kw)
    kw = {k: v for k, v in plan_kw.items() if k != "dense_costs"}
    p = plan(model, scores, limits, predictors, example=example, **kw)
    small = apply(model, p, example)
    if finetune is not None:
        small = _keep_precisions(finetune(small, 0), small)
    return ScheduleResult(small, [p], [limits], {gid: list(g.indices) for gid, g in p.groups.items()})


def iterative(model: nn.Module, budget: Budget | str, predictors: Mapping[Any, Any], *, rescore: Rescore,
              finetune: Finetune | None = None, steps: int = 4, example: Any = None, decay: str = "geometric",
              on_step: Callable[[int, Plan, nn.Module], None] | None = None, **plan_kw: Any) -> ScheduleResult:
    """NetAdapt/HALP-style: ``steps`` x (re-score, plan a tighter budget, remove channels, short fine-tune).

    The budget is resolved once against the original model (``plan_kw["dense_costs"]``:
    measured dense costs per target); step ``t`` plans for :meth:`Limits.step`.
    ``rescore(model) -> {group: scores}`` runs on the current model before each
    step; ``finetune(model, step) -> model`` after each step (the last included)
    when given. ``on_step(step, plan, model)`` is a progress hook.
    """
    from edgeprune.graph import channel_groups, example_input

    if example is None:
        example = example_input(model)
    limits = _resolve(model, budget, predictors, example, plan_kw)
    stepped = step_limits(limits, steps, decay)
    original = {g.id: list(range(g.size)) for g in channel_groups(model, example).groups}
    plans: list[Plan] = []
    current = model
    kw = {k: v for k, v in plan_kw.items() if k not in ("dense_costs", "graph")}
    for t, lim in enumerate(stepped, start=1):
        scores = rescore(current)
        p = plan(current, scores, lim, predictors, example=example, **kw)
        plans.append(p)
        for gid, g in p.groups.items():
            if gid in original:
                original[gid] = [original[gid][i] for i in g.indices]
        current = apply(current, p, example)
        if finetune is not None:
            current = _keep_precisions(finetune(current, t), current)
        if on_step is not None:
            on_step(t, p, current)
    return ScheduleResult(current, plans, stepped, original)


def _keep_precisions(new: nn.Module, old: nn.Module) -> nn.Module:
    if not hasattr(new, "edgeprune_precisions") and hasattr(old, "edgeprune_precisions"):
        new.edgeprune_precisions = dict(old.edgeprune_precisions)
    return new


__all__ = ["ScheduleResult", "iterative", "one_shot", "step_limits"]
