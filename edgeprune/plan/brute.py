"""Brute force over every assignment: the reference the MILP is checked against on small models."""
from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping

from edgeprune.errors import BadInput
from edgeprune.plan.costs import Problem, evaluate

Evaluator = Callable[[Mapping[int, int]], "tuple[float, dict[str, float]]"]


def brute_force(problem: Problem, evaluator: Evaluator | None = None, max_assignments: int = 2_000_000,
                tol: float = 1e-9) -> tuple[dict[int, int] | None, float | None]:
    """The best feasible assignment ``({factor: value index}, objective)``, or ``(None, None)``.

    ``evaluator(choice) -> (objective, {metric: total})`` defaults to the cost
    tables (:func:`edgeprune.plan.costs.evaluate`); pass an independent one
    (signatures -> ``predictor.model_cost``) to check the tables as well.
    Ties are broken by the first assignment in enumeration order.
    """
    sizes = [len(f.values) for f in problem.factors]
    total = math.prod(sizes) if sizes else 1
    if total > max_assignments:
        raise BadInput(f"brute force over {total:,} assignments is too many (max {max_assignments:,})")
    evaluator = evaluator or (lambda c: evaluate(problem, c))
    best, best_obj = None, -math.inf
    for combo in itertools.product(*[range(n) for n in sizes]):
        choice = dict(enumerate(combo))
        obj, totals = evaluator(choice)
        if not all(math.isfinite(v) for v in totals.values()):
            continue
        ok = all(totals[m] <= lim * (1 + tol) + tol for m, lim in problem.limits.items())
        if ok and obj > best_obj + 1e-12:
            best, best_obj = choice, obj
    return (best, best_obj) if best is not None else (None, None)
