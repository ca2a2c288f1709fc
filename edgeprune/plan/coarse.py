"""Coarse-to-fine search for big planning problems (torchvision CNNs at 224 px: ~100k MILP variables).

A layer's table is the product of its in-group counts, out-group counts and precisions, so a 1x1
convolution between two 960-channel groups at granularity 8 alone has 121 x 121 x 2 entries, and
HiGHS needed 46 s on EfficientNet-Lite0. Here the count axes are first offered on a coarse grid (at
most :data:`COARSE` values per group, the full size and the smallest count always in it); each
following level offers, per group, the values within two steps of the previous level's choice on a
grid a few times finer, until the step is the granularity itself. Every level is an exact MILP over a
subset of the choices (tables are sliced, never rebuilt) that contains the previous level's plan, so
the objective never goes down and a feasible coarse plan stays feasible. The result is optimal within
the final window, not proven optimal over every choice: :class:`~edgeprune.plan.milp.Solution` says
so (``search``), and the plan's notes repeat it.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace

import numpy as np

from edgeprune.plan.costs import LayerTable, Problem

#: problems whose estimated variable count is above this are solved coarse to fine
DIRECT_LIMIT = 15_000
#: values per group offered at the coarsest level
COARSE = 12
#: each level's step is the previous one divided by this
REFINE = 4
#: a level's window reaches this many of the previous level's steps either side of its choice
REACH = 2


def size_estimate(problem: Problem) -> int:
    """Variables of the MILP (one-hot choices plus one per table entry of multi-axis tables; pairs counted per layer)."""
    n = sum(len(f.values) for f in problem.factors)
    for t in problem.layers:
        if len(t.axes) >= 2:
            n += int(np.prod([len(problem.factors[a].values) for a in t.axes]))
    return n


def restrict(problem: Problem, keep: Mapping[int, list[int]]) -> Problem:
    """The same problem with factor ``fi`` offering only its values ``keep[fi]`` (indices, ascending; others whole)."""
    idx = {fi: list(keep.get(fi, range(len(f.values)))) for fi, f in enumerate(problem.factors)}
    factors = [replace(f, values=[f.values[i] for i in idx[fi]]) for fi, f in enumerate(problem.factors)]
    value = {fi: np.asarray(v)[idx[fi]] for fi, v in problem.value.items()}
    layers = []
    for t in problem.layers:
        if not t.axes:
            layers.append(t)
            continue
        sel = np.ix_(*[idx[a] for a in t.axes])
        layers.append(LayerTable(t.name, list(t.axes), {m: a[sel] for m, a in t.costs.items()}))
    return replace(problem, factors=factors, layers=layers, value=value)


def _grid(lo: int, hi: int, step: int, must: int | None = None) -> list[int]:
    """Indices lo..hi every ``step``, both ends and ``must`` included."""
    out = set(range(lo, hi + 1, max(1, step))) | {lo, hi}
    if must is not None:
        out.add(must)
    return sorted(out)


def levels(problem: Problem) -> tuple[dict[int, int], int]:
    """(coarsest step per group factor, number of refinement levels after the coarse one)."""
    steps = {fi: max(1, math.ceil((len(f.values) - 1) / (COARSE - 1)))
             for fi, f in enumerate(problem.factors) if f.kind == "group" and len(f.values) > COARSE}
    top = max(steps.values(), default=1)
    n = 0
    while top > 1:
        top = max(1, top // REFINE)
        n += 1
    return steps, n


def coarse_keep(problem: Problem, steps: Mapping[int, int]) -> dict[int, list[int]]:
    """The coarsest level: each big group on its grid (smallest and full size included)."""
    return {fi: _grid(0, len(problem.factors[fi].values) - 1, s) for fi, s in steps.items()}


def finer_keep(problem: Problem, steps: Mapping[int, int], choice: Mapping[int, int]) -> tuple[dict[int, list[int]], dict[int, int]]:
    """The next level around ``choice`` (full-problem indices): within ``REACH`` old steps, on a grid ``REFINE`` x finer."""
    keep, new_steps = {}, {}
    for fi, s in steps.items():
        c, last = choice[fi], len(problem.factors[fi].values) - 1
        fine = max(1, s // REFINE)
        keep[fi] = _grid(max(0, c - REACH * s), min(last, c + REACH * s), fine, must=c)
        new_steps[fi] = fine
    return keep, new_steps


def lift(keep: Mapping[int, list[int]], choice: Mapping[int, int]) -> dict[int, int]:
    """A restricted problem's choice as indices into the full problem."""
    return {fi: (keep[fi][i] if fi in keep else i) for fi, i in choice.items()}
