"""The budget-driven planner: kept channels per group and precision per layer, solved exactly (docs/plan.md)."""
from edgeprune.plan.config import PlanConfig
from edgeprune.plan.plan import GroupPlan, Plan, apply, plan
from edgeprune.plan.schedule import ScheduleResult, iterative, one_shot, step_limits

__all__ = ["GroupPlan", "Plan", "PlanConfig", "ScheduleResult", "apply", "iterative", "one_shot", "plan", "step_limits"]

from edgeprune._callable import make_callable

make_callable(__name__, "plan")
