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
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

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
    cpu_s: float = 0.0  # process CPU time (the machine may be shared; wall time then overstates the work)
    search: str = "exact"  # or how a big problem was searched (edgeprune.plan.coarse)
    time_limited: bool = False  # a time limit cut the search short: the plan is not proven optimal


class _Model:
    """Variables, structural rows and metric rows of one problem (built once, vectorised).

    Columns: ``x`` (one-hot per factor), then ``w`` (one block per pair of coupled
    groups, shared by every layer between those two groups), then ``z`` (one
    block per layer whose cost depends on two groups and its precision, or on
    one group and its precision).
    """

    def __init__(self, problem: Problem) -> None:
        self.p = problem
        factors = problem.factors
        self.xoff: list[int] = []
        n = 0
        for f in factors:
            self.xoff.append(n)
            n += len(f.values)
        self.nx = n
        # pair blocks
        self.woff: dict[tuple[int, int], int] = {}
        for t in problem.layers:
            if self._pair(t) is not None and self._pair(t) not in self.woff:
                a, b = self._pair(t)
                self.woff[(a, b)] = n
                n += len(factors[a].values) * len(factors[b].values)
        # z blocks
        self.zoff: dict[int, int] = {}
        for ti, t in enumerate(problem.layers):
            if len(t.axes) >= 2 and not (len(t.axes) == 2 and self._pair(t) is not None):
                self.zoff[ti] = n
                n += int(np.prod([len(factors[a].values) for a in t.axes]))
        self.n = n
        ub = np.ones(n)
        for ti, t in enumerate(problem.layers):
            bad = np.zeros(t.costs[problem.metrics[0]].shape, dtype=bool)
            for m in problem.metrics:
                bad |= ~np.isfinite(t.costs[m])
            if not bad.any() or not t.axes:
                continue
            cols, _ = self.table_vector(ti, problem.metrics[0])
            ub[cols[bad.ravel()]] = 0  # choices a predictor cannot price are forbidden
        self._forbid_dominated(ub)
        self.ub = ub
        self.integrality = np.zeros(n)
        self.integrality[: self.nx] = 1
        rows, cols, vals = [], [], []
        r = 0

        def add(rr: np.ndarray, cc: np.ndarray, vv: float | np.ndarray) -> None:
            rows.append(rr)
            cols.append(cc)
            vals.append(np.broadcast_to(np.asarray(vv, dtype=np.float64), cc.shape).copy())

        for fi, f in enumerate(factors):  # one-hot
            k = len(f.values)
            add(np.full(k, r), self.xoff[fi] + np.arange(k), 1.0)
            r += 1
        n_onehot = r
        for (a, b), w0 in self.woff.items():  # pair marginals
            na, nb = len(factors[a].values), len(factors[b].values)
            ia, ib = np.unravel_index(np.arange(na * nb), (na, nb))
            add(r + ia, w0 + np.arange(na * nb), 1.0)
            add(r + np.arange(na), self.xoff[a] + np.arange(na), -1.0)
            r += na
            add(r + ib, w0 + np.arange(na * nb), 1.0)
            add(r + np.arange(nb), self.xoff[b] + np.arange(nb), -1.0)
            r += nb
        for ti, z0 in self.zoff.items():  # layer marginals
            t = problem.layers[ti]
            shape = [len(factors[a].values) for a in t.axes]
            size = int(np.prod(shape))
            pair = self._pair(t)
            if pair is not None:
                # sum_p z[a, b, p] = w[a, b]; sum_{a, b} z[a, b, p] = x[prec, p]
                nab, npr = shape[0] * shape[1], shape[2]
                flat = np.arange(size)
                add(r + flat // npr, z0 + flat, 1.0)
                add(r + np.arange(nab), self.woff[pair] + np.arange(nab), -1.0)
                r += nab
                add(r + flat % npr, z0 + flat, 1.0)
                add(r + np.arange(npr), self.xoff[t.axes[2]] + np.arange(npr), -1.0)
                r += npr
                continue
            unr = np.unravel_index(np.arange(size), shape)
            for ax, a in enumerate(t.axes):
                add(r + unr[ax], z0 + np.arange(size), 1.0)
                add(r + np.arange(shape[ax]), self.xoff[a] + np.arange(shape[ax]), -1.0)
                r += shape[ax]
        self.n_eq = r
        self.eq = sparse.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(r, n)
        ) if rows else sparse.csr_matrix((0, n))
        self.eq_rhs = np.concatenate([np.ones(n_onehot), np.zeros(r - n_onehot)])
        self.c = np.zeros(n)
        for fi, vals_ in problem.value.items():
            self.c[self.xoff[fi] : self.xoff[fi] + len(vals_)] = -vals_

    def _forbid_dominated(self, ub: np.ndarray) -> None:
        """Forbid a precision for a channel combination when another precision of the same layer is no worse
        on every limited cost and has no larger bit-width cost (it can never be strictly needed)."""
        p = self.p
        limited = [m for m in p.metrics if m in p.limits]
        for ti, t in enumerate(p.layers):
            if not t.axes or p.factors[t.axes[-1]].kind != "prec":
                continue
            pen = -p.value[t.axes[-1]]  # bit-width cost per precision
            costs = np.stack([np.where(np.isfinite(t.costs[m]), t.costs[m], np.inf) for m in limited], 0) if limited \
                else np.zeros((0,) + t.costs[p.metrics[0]].shape)
            finite = np.all(np.stack([np.isfinite(t.costs[m]) for m in p.metrics], 0), 0)
            npr = len(pen)
            dominated = np.zeros(finite.shape, dtype=bool)
            for i in range(npr):
                for j in range(npr):
                    if i == j or pen[j] > pen[i] or (pen[j] == pen[i] and j > i):
                        continue
                    # j dominates i where j is priced and no worse on every limited metric
                    better = finite[..., j] & np.all(costs[..., j] <= costs[..., i], axis=0) if limited else finite[..., j]
                    dominated[..., i] |= better
            if dominated.any():
                cols, _ = self.table_vector(ti, p.metrics[0])
                ub[cols[dominated.ravel()]] = 0

    def _pair(self, t) -> tuple[int, int] | None:
        """The two group factors a table couples (first two axes), or None."""
        f = self.p.factors
        if len(t.axes) >= 2 and f[t.axes[0]].kind == "group" and f[t.axes[1]].kind == "group":
            return (t.axes[0], t.axes[1])
        return None

    def table_vector(self, ti: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """(column indices, coefficients) of one table's cost for ``metric`` (inf replaced by 0: forbidden anyway)."""
        t = self.p.layers[ti]
        arr = np.where(np.isfinite(t.costs[metric]), t.costs[metric], 0.0)
        if len(t.axes) == 0:
            return np.zeros(0, dtype=int), np.zeros(0)
        if len(t.axes) == 1:
            return self.xoff[t.axes[0]] + np.arange(arr.size), arr.ravel()
        if ti in self.zoff:
            return self.zoff[ti] + np.arange(arr.size), arr.ravel()
        return self.woff[self._pair(t)] + np.arange(arr.size), arr.ravel()

    def metric_row(self, metric: str) -> np.ndarray:
        """Dense coefficient row of a summed metric."""
        row = np.zeros(self.n)
        for ti in range(len(self.p.layers)):
            cols, vals = self.table_vector(ti, metric)
            if len(cols):
                np.add.at(row, cols, vals)
        return row

    def fixed_peak(self, metric: str = "peak_memory") -> float:
        """Largest value of a max metric (peak memory) among layers no choice changes."""
        vals = [float(t.costs[metric]) for t in self.p.layers if not t.axes and t.costs[metric].shape == ()]
        return max(vals, default=0.0)

    def decode(self, x: np.ndarray) -> dict[int, int]:
        """Chosen value index per factor."""
        return {fi: int(np.argmax(x[self.xoff[fi] : self.xoff[fi] + len(f.values)])) for fi, f in enumerate(self.p.factors)}


@contextmanager
def _quiet_stdout() -> Iterator[None]:
    """HiGHS prints some diagnostics straight to file descriptor 1; keep stdout clean (``--json``)."""
    if os.environ.get("EP_DISP"):
        yield
        return
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError, AttributeError):  # no real stdout (some test runners): nothing to guard
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            try:
                yield
            finally:
                os.dup2(saved, 1)
    finally:
        os.close(saved)


def _budget_rows(m: _Model, metrics: dict[str, float]) -> tuple[list[sparse.csr_matrix], list[np.ndarray]]:
    mats, ubs = [], []
    for metric, limit in metrics.items():
        if metric in m.p.maxed:
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
                scale = 1.0 / limit if limit > 0 else 1.0
                mats.append(sparse.csr_matrix((np.concatenate(vals) * scale, (np.concatenate(rows), np.concatenate(cols))), shape=(r, m.n)))
                ubs.append(np.full(r, limit * scale))
        else:
            # rows scaled by their limit so cycles, bytes and ms rows are all O(1) for the solver
            scale = 1.0 / limit if limit > 0 else 1.0
            mats.append(sparse.csr_matrix(m.metric_row(metric)[None, :] * scale))
            ubs.append(np.array([(limit - m.p.constants[metric]) * scale]))
    return mats, ubs


def _run(m: _Model, c: np.ndarray, extra: list[sparse.csr_matrix], extra_ub: list[np.ndarray], time_limit: float,
         integrality: np.ndarray | None = None, lb: np.ndarray | None = None, ub: np.ndarray | None = None):
    cons = [LinearConstraint(m.eq, m.eq_rhs, m.eq_rhs)]
    if extra:
        a = sparse.vstack(extra).tocsr()
        cons.append(LinearConstraint(a, -np.inf, np.concatenate(extra_ub)))
    n = len(c)
    with _quiet_stdout():
        res = milp(
            c,
            integrality=m.integrality if integrality is None else integrality,
            bounds=Bounds(np.zeros(n) if lb is None else lb, m.ub if ub is None else ub),
            constraints=cons,
            options={"time_limit": float(time_limit), "mip_rel_gap": 1e-9, "disp": bool(os.environ.get("EP_DISP"))},
        )
    rows = sum(x.A.shape[0] for x in cons)
    return res, rows


def solve(problem: Problem, time_limit: float = 10.0) -> Solution:
    """Maximise the objective under every limit in ``problem.limits``.

    Exact (up to HiGHS's 1e-9 relative gap) when the MILP is small; a big one (over
    :data:`edgeprune.plan.coarse.DIRECT_LIMIT` variables) is searched coarse to fine, each
    level exact over a window of choices (:mod:`edgeprune.plan.coarse`). ``time_limit`` bounds
    the whole search; ``Solution.time_limited`` says when it cut something short.
    """
    from edgeprune.plan import coarse

    if coarse.size_estimate(problem) <= coarse.DIRECT_LIMIT or not coarse.levels(problem)[0]:
        return _solve_exact(problem, time_limit)
    return _coarse_to_fine(problem, time_limit)


def _coarse_to_fine(problem: Problem, time_limit: float) -> Solution:
    """:func:`solve` of a big problem: a coarse grid, then finer windows around each level's plan."""
    from edgeprune.plan import coarse

    t0, c0 = time.perf_counter(), time.process_time()
    deadline = t0 + time_limit
    steps, n_levels = coarse.levels(problem)
    keep = grid = coarse.coarse_keep(problem, steps)
    sol = _solve_exact(coarse.restrict(problem, keep), time_limit * 0.5)
    if sol.choice is None:
        if sol.status != "infeasible":
            return replace(sol, wall_s=time.perf_counter() - t0, cpu_s=time.process_time() - c0,
                           search="coarse-to-fine (no plan on the coarse grid)", time_limited=sol.status == "timeout")
        # the grid may miss the only counts that fit: the whole problem, with the time left
        full = _solve_exact(problem, max(deadline - time.perf_counter(), 1.0))
        return replace(full, wall_s=time.perf_counter() - t0, cpu_s=time.process_time() - c0,
                       search="exact (the coarse grid had no feasible plan)")
    best, choice = sol, coarse.lift(keep, sol.choice)
    limited = sol.status != "optimal"
    variables, constraints, done = sol.variables, sol.constraints, 0
    for _ in range(n_levels):
        left = deadline - time.perf_counter()
        if left <= 0.05:
            limited = True
            break
        keep, steps = coarse.finer_keep(problem, steps, choice)
        s = _solve_exact(coarse.restrict(problem, keep), left)
        variables, constraints = max(variables, s.variables), max(constraints, s.constraints)
        if s.choice is None:  # a window always holds the previous plan: only a time limit gets here
            limited = True
            break
        limited |= s.status != "optimal"
        done += 1
        if s.objective is not None and s.objective >= (best.objective or -math.inf) - 1e-12:
            best, choice = s, coarse.lift(keep, s.choice)
    for _ in range(3 if done == n_levels else 0):  # polish: re-centre the finest window while the plan moves
        left = deadline - time.perf_counter()
        if left <= 0.05:
            break
        keep, steps = coarse.finer_keep(problem, steps, choice)
        keep = {fi: sorted(set(v) | set(grid[fi])) for fi, v in keep.items()}  # far jumps stay possible
        s = _solve_exact(coarse.restrict(problem, keep), left)
        if s.choice is None or s.objective is None or s.objective <= (best.objective or -math.inf) + 1e-12:
            limited |= s.choice is None or s.status != "optimal"
            break
        best, choice = s, coarse.lift(keep, s.choice)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    search = (f"coarse-to-fine: {COARSE_TEXT.format(n=coarse.COARSE)}, then {done} of {n_levels} finer level(s) "
              "(optimal within the last window, not proven over every count)")
    return Solution(choice, best.objective, "feasible" if limited else "optimal", wall, best.gap, variables, constraints,
                    best.message, cpu, search, limited)


COARSE_TEXT = "a grid of at most {n} counts per group"


def _solve_exact(problem: Problem, time_limit: float = 10.0) -> Solution:
    """One MILP over every choice of ``problem``; exact up to HiGHS's 1e-9 relative gap."""
    t0, c0 = time.perf_counter(), time.process_time()
    m = _Model(problem)
    limits = dict(problem.limits)
    for metric in problem.maxed:
        if metric in limits and m.fixed_peak(metric) > limits[metric] * (1 + 1e-12):
            return Solution(None, None, "infeasible", time.perf_counter() - t0, None, m.n, m.n_eq,
                            f"a fixed layer exceeds the {metric} limit")
    mats, ubs = _budget_rows(m, limits)
    res, rows = _run(m, m.c, mats, ubs, time_limit)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    gap = getattr(res, "mip_gap", None)
    if res.x is not None and res.status in (0, 1):
        status = "optimal" if res.status == 0 else "feasible"
        choice = m.decode(res.x)
        return Solution(choice, float(-res.fun + problem.constant_value), status, wall, gap, m.n, rows, res.message, cpu,
                        time_limited=res.status == 1)
    if res.status == 2:
        return Solution(None, None, "infeasible", wall, None, m.n, rows, res.message, cpu)
    if res.status == 1:
        return Solution(None, None, "timeout", wall, None, m.n, rows, res.message, cpu, time_limited=True)
    return Solution(None, None, "error", wall, None, m.n, rows, res.message, cpu)


def minimum(problem: Problem, metric: str, time_limit: float = 10.0) -> float:
    """The smallest reachable value of ``metric`` over all choices, ignoring every limit (for error messages)."""
    m = _Model(problem)
    if metric in problem.maxed:
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
        with _quiet_stdout():
            res = milp(c, integrality=np.append(m.integrality, 0), bounds=Bounds(np.zeros(n), np.append(m.ub, np.inf)),
                       constraints=cons, options={"time_limit": float(time_limit), "disp": False})
        best = float(res.fun) if res.x is not None else math.inf
        return max(best, m.fixed_peak(metric))
    row = m.metric_row(metric)
    res, _ = _run(m, row, [], [], time_limit)
    if res.x is None:
        return math.inf
    return float(res.fun) + problem.constants[metric]
