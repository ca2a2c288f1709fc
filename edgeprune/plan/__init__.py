"""The budget-driven planner: kept channels per group and precision per layer, solved exactly (docs/plan.md)."""
from edgeprune.plan.plan import GroupPlan, Plan, apply, plan
from edgeprune.plan.schedule import ScheduleResult, iterative, one_shot, step_budgets

__all__ = ["plan", "Plan", "GroupPlan", "apply", "one_shot", "iterative", "step_budgets", "ScheduleResult"]
