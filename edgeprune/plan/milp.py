"""The exact solver: a mixed-integer linear program solved by HiGHS through ``scipy.optimize.milp``.

Formulation (see docs/plan.md for the full write-up):

- ``x[f, v]`` binary, one-hot per factor ``f`` (a group's kept count, or a
  layer's precision): ``sum_v x[f, v] = 1``.
- A layer whose cost depends on one factor puts its costs straight on ``x``.
- A layer whose cost depends on two or three factors (in-group count, out-group
  count, its precision) gets a continuous ``z[l, (a, b, p)] in [0, 1]`` per
  combination with marginal constraints ``sum_{z with axis = v} z = x[axis, v]``
  for each axis and value. With one-hot ``x`` the only feasible ``z`` is the
  indicator of the chosen combination, so ``z`` needs no integrality and the
  layer's cost ``sum z * cost`` is exact (the linearised pair/triple product).
- Every budget is one linear row: ``sum(layer costs) <= limit - constant`` per
  latency target, model bytes and MACs; peak memory is one row per layer.
- Objective: maximise ``sum_g R_g(k_g) - sum_l penalty(l, p_l)`` (costs.py).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, milp

from edgeprune.plan.costs import Problem


@dataclass
class Solution:
    """The solver's answer: ``choice[f]`` = chosen value index per factor, or None when infeasible."""

    choice: dict[int, int] | None
    objective: float | None
    status: str  # "optimal" | "feasible" (time limit, gap below) | "infeasible" | "timeout" | "error"
    wall_s: float
    gap: float | None
    variables: int
    constraints: int
    message: str = ""


class _Model:
    """Variables, structural rows and metric rows of one problem (built once, vectorised)."""

    def __init__(self, problem: Problem) -> None:
        self.p = problem
        self.xoff: list[int] = []
        n = 0
        for f in problem.factors:
            self.xoff.append(n)
            n += len(f.values)
        self.nx = n
        self.zoff: dict[int, int] = {}
        for ti, t in enumerate(problem.layers):
            if len(t.axes) >= 2:
                self.zoff[ti] = n
                n += int(np.prod([len(problem.factors[a].values) for a in t.axes]))
        self.n = n
        ub = np.ones(n)
        # choices a predictor cannot price are forbidden
        for ti, t in enumerate(problem.layers):
            bad = np.zeros(t.costs[problem.metrics[0]].shape, dtype=bool)
            for m in problem.metrics:
                bad |= ~np.isfinite(t.costs[m])
            if not bad.any():
                continue
            if len(t.axes) == 1:
                ub[self.xoff[t.axes[0]] + np.flatnonzero(bad)] = 0
            elif len(t.axes) >= 2:
                ub[self.zoff[ti] + np.flatnonzero(bad.ravel())] = 0
        self.ub = ub
        self.integrality = np.zeros(n)
        self.integrality[: self.nx] = 1
        # structural equalities: one-hot rows, then marginal rows
        rows, cols, vals = [], [], []
        r = 0
        for fi, f in enumerate(problem.factors):
            k = len(f.values)
            rows.append(np.full(k, r))
            cols.append(self.xoff[fi] + np.arange(k))
            vals.append(np.ones(k))
            r += 1
        n_onehot = r
        for ti, z0 in self.zoff.items():
            t = problem.layers[ti]
            shape = [len(problem.factors[a].values) for a in t.axes]
            size = int(np.prod(shape))
            unr = np.unravel_index(np.arange(size), shape)
            for ax, a in enumerate(t.axes):
                rows.append(r + unr[ax])
                cols.append(z0 + np.arange(size))
                vals.append(np.ones(size))
                rows.append(r + np.arange(shape[ax]))
                cols.append(self.xoff[a] + np.arange(shape[ax]))
                vals.append(-np.ones(shape[ax]))
                r += shape[ax]
        self.n_eq = r
        self.eq = sparse.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(r, n)
        ) if rows else sparse.csr_matrix((0, n))
        self.eq_rhs = np.concatenate([np.ones(n_onehot), np.zeros(r - n_onehot)])
        self.c = np.zeros(n)
        for fi, vals_ in problem.value.items():
            self.c[self.xoff[fi] : self.xoff[fi] + len(vals_)] = -vals_

    def table_vector(self, ti: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """(column indices, coefficients) of one table's cost for ``metric`` (inf replaced by 0: forbidden anyway)."""
        t = self.p.layers[ti]
        arr = np.where(np.isfinite(t.costs[metric]), t.costs[metric], 0.0)
        if len(t.axes) == 0:
            return np.zeros(0, dtype=int), np.zeros(0)
        if len(t.axes) == 1:
            return self.xoff[t.axes[0]] + np.arange(arr.size), arr.ravel()
        return self.zoff[ti] + np.arange(arr.size), arr.ravel()

    def metric_row(self, metric: str) -> np.ndarray:
        """Dense coefficient row of a summed metric."""
        row = np.zeros(self.n)
        for ti in range(len(self.p.layers)):
            cols, vals = self.table_vector(ti, metric)
            if len(cols):
                np.add.at(row, cols, vals)
        return row

    def fixed_peak(self) -> float:
        """Largest peak-memory proxy among layers no choice changes."""
        vals = [float(t.costs["peak_memory"]) for t in self.p.layers if not t.axes and t.costs["peak_memory"].shape == ()]
        return max(vals, default=0.0)

    def decode(self, x: np.ndarray) -> dict[int, int]:
        """Chosen value index per factor."""
        return {fi: int(np.argmax(x[self.xoff[fi] : self.xoff[fi] + len(f.values)])) for fi, f in enumerate(self.p.factors)}


def _budget_rows(m: _Model, metrics: dict[str, float]) -> tuple[list[sparse.csr_matrix], list[np.ndarray]]:
    mats, ubs = [], []
    for metric, limit in metrics.items():
        if metric == "peak_memory":
            rows, cols, vals = [], [], []
            r = 0
            for ti, t in enumerate(m.p.layers):
                if not t.axes:
                    continue
                c, v = m.table_vector(ti, metric)
                rows.append(np.full(len(c), r))
                cols.append(c)
                vals.append(v)
                r += 1
            if r:
                mats.append(sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(r, m.n)))
                ubs.append(np.full(r, limit))
        else:
            mats.append(sparse.csr_matrix(m.metric_row(metric)[None, :]))
            ubs.append(np.array([limit - m.p.constants[metric]]))
    return mats, ubs


def _run(m: _Model, c: np.ndarray, extra: list[sparse.csr_matrix], extra_ub: list[np.ndarray], time_limit: float,
         integrality: np.ndarray | None = None, lb: np.ndarray | None = None, ub: np.ndarray | None = None):
    cons = [LinearConstraint(m.eq, m.eq_rhs, m.eq_rhs)]
    if extra:
        a = sparse.vstack(extra).tocsr()
        cons.append(LinearConstraint(a, -np.inf, np.concatenate(extra_ub)))
    n = len(c)
    res = milp(
        c,
        integrality=m.integrality if integrality is None else integrality,
        bounds=Bounds(np.zeros(n) if lb is None else lb, m.ub if ub is None else ub),
        constraints=cons,
        options={"time_limit": float(time_limit), "mip_rel_gap": 1e-9, "disp": False},
    )
    rows = sum(x.A.shape[0] for x in cons)
    return res, rows


def solve(problem: Problem, time_limit: float = 10.0) -> Solution:
    """Maximise the objective under every limit in ``problem.limits``; exact up to HiGHS's 1e-9 relative gap."""
    t0 = time.perf_counter()
    m = _Model(problem)
    limits = dict(problem.limits)
    if "peak_memory" in limits and m.fixed_peak() > limits["peak_memory"] * (1 + 1e-12):
        return Solution(None, None, "infeasible", time.perf_counter() - t0, None, m.n, m.n_eq, "a fixed layer exceeds the peak memory")
    mats, ubs = _budget_rows(m, limits)
    res, rows = _run(m, m.c, mats, ubs, time_limit)
    wall = time.perf_counter() - t0
    gap = getattr(res, "mip_gap", None)
    if res.x is not None and res.status in (0, 1):
        status = "optimal" if res.status == 0 else "feasible"
        choice = m.decode(res.x)
        return Solution(choice, float(-res.fun + problem.constant_value), status, wall, gap, m.n, rows, res.message)
    if res.status == 2:
        return Solution(None, None, "infeasible", wall, None, m.n, rows, res.message)
    if res.status == 1:
        return Solution(None, None, "timeout", wall, None, m.n, rows, res.message)
    return Solution(None, None, "error", wall, None, m.n, rows, res.message)


def minimum(problem: Problem, metric: str, time_limit: float = 10.0) -> float:
    """The smallest reachable value of ``metric`` over all choices, ignoring every limit (for error messages)."""
    m = _Model(problem)
    if metric == "peak_memory":
        # minimise t with every layer's peak <= t
        n = m.n + 1
        c = np.zeros(n)
        c[-1] = 1.0
        rows, cols, vals = [], [], []
        r = 0
        for ti, t in enumerate(problem.layers):
            if not t.axes:
                continue
            cc, v = m.table_vector(ti, metric)
            rows += [np.full(len(cc), r), np.array([r])]
            cols += [cc, np.array([m.n])]
            vals += [v, np.array([-1.0])]
            r += 1
        eq = sparse.hstack([m.eq, sparse.csr_matrix((m.eq.shape[0], 1))]).tocsr()
        cons = [LinearConstraint(eq, m.eq_rhs, m.eq_rhs)]
        if r:
            a = sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(r, n))
            cons.append(LinearConstraint(a, -np.inf, np.zeros(r)))
        res = milp(c, integrality=np.append(m.integrality, 0), bounds=Bounds(np.zeros(n), np.append(m.ub, np.inf)),
                   constraints=cons, options={"time_limit": float(time_limit), "disp": False})
        best = float(res.fun) if res.x is not None else math.inf
        return max(best, m.fixed_peak())
    row = m.metric_row(metric)
    res, _ = _run(m, row, [], [], time_limit)
    if res.x is None:
        return math.inf
    return float(res.fun) + problem.constants[metric]
