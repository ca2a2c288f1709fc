"""Cost tables: what every choice (kept channels x precision) costs per layer, for every budget metric.

A layer's cost depends on the kept counts of its in-group and out-group and on
its precision, so each layer gets one table indexed by the *axes* it depends on
(the in-group's allowed counts, the out-group's allowed counts, the layer's
precisions; fixed dimensions are not axes). The solver links each table to the
one-hot choice variables of its axes.

Every metric comes from the registry (:mod:`edgeprune.budget`): its ``layer_cost``
prices a layer, its ``reduce`` says sum or max. With several targets the channel
choice is shared and each target has its own precision per layer: a layer gets
one table for the first target (every metric) and one per further target (its
latency only), each over its own precision axis.

Metrics (all linear in the table entries, so every budget is a linear constraint):

- ``lat:<target>``: the layer's marginal share of ``predictor.model_cost`` in the
  predictor's unit (ms or cycles): ``model_cost({l: sig}) - model_cost({})``. The
  model's total is the sum plus ``model_cost(dense) - sum(shares at dense)``, so
  totals equal ``predictor.model_cost`` exactly whenever the model cost is a
  constant plus a sum over layers (plain layer sums, and the profiler's calibrated
  ``a * layer_sum + b * unaligned_activations + offset``); :func:`plan` checks the
  chosen plan with ``model_cost`` itself and flags any difference.
- ``model_bytes``: stored weights as :func:`edgeprune.metrics.model_bytes` counts
  them, at the first target's precisions: conv/linear weights at the layer's bit-width (fp32 32, fp16 16, int8 8,
  int4 4 bits), every other parameter (biases, norm scales) at 32 bits.
- ``macs``: :attr:`LayerSignature.macs` summed (as :func:`edgeprune.metrics.count_macs`).
- ``peak_memory``: a per-layer proxy, batch 1: input plus output activation bytes
  of the layer (plus the output again when the runtime fuses a residual add, for
  the skip operand), at the layer's activation width (fp32 4, fp16 2, int8 and
  int4 1 byte); the limit must hold for the largest layer (one constraint per layer).
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeprune.budget import metrics
from edgeprune.errors import BadInput, EdgepruneError
from edgeprune.graph import ChannelGraph
from edgeprune.graph.signature import LayerSignature
from edgeprune.metrics import (
    ACT_BYTES,
    WEIGHT_BITS,
    activation_bytes,
    sort_precisions,
    weight_bytes,
    weight_count,
)
from edgeprune.plan.choices import Choices, unit_of

__all__ = ["ACT_BYTES", "WEIGHT_BITS", "Factor", "LayerTable", "Problem", "activation_bytes", "build_problem", "evaluate",
           "group_param_bytes", "quant_proxy", "retained_curve", "safe_cost", "sort_precisions", "top_indices",
           "weight_bytes", "weight_count"]


# --------------------------------------------------------------------------- the problem


@dataclass
class Factor:
    """One discrete decision: a group's kept count, or a layer's precision on one target."""

    kind: str  # "group" or "prec"
    key: str  # group id or layer name
    values: list[Any]
    target: str | None = None  # the target whose engine a "prec" factor sets


@dataclass
class LayerTable:
    """Costs of one layer for every combination of its axes (factor indices)."""

    name: str
    axes: list[int]  # factor indices; a group factor appears once even if it sets in and out
    costs: dict[str, np.ndarray]  # metric -> array shaped [len(values) for each axis]; inf = not available


@dataclass
class Problem:
    """Everything the solvers need, independent of the solver."""

    factors: list[Factor]
    layers: list[LayerTable]
    value: dict[int, np.ndarray]  # factor index -> objective value per choice (to maximise)
    constants: dict[str, float]  # metric -> cost that no choice changes
    constant_value: float  # objective contribution of groups with a single choice
    limits: dict[str, float]  # metric -> limit (sum metrics); a max metric (peak_memory) holds per layer
    metrics: list[str]  # every metric tabulated
    fixed_widths: dict[str, int] = field(default_factory=dict)  # groups with one allowed count
    fixed_precisions: dict[str, dict[str, str]] = field(default_factory=dict)  # target -> layers with one precision
    maxed: tuple[str, ...] = ("peak_memory",)  # metrics whose model value is the max over layers


# --------------------------------------------------------------------------- objective


def retained_curve(scores: torch.Tensor | np.ndarray | Sequence[float], counts: Sequence[int]) -> np.ndarray:
    """R_g(k) for each allowed count k: the share of the group's importance kept by its top-k channels.

    ``R_g(k) = sum_{i<k} s_(i) / sum_i s_i`` with ``s = max(score, 0)`` sorted
    descending; a group whose scores are all zero gets ``k / n``.
    """
    s = np.clip(np.asarray(scores.detach().cpu().double() if isinstance(scores, torch.Tensor) else scores, dtype=np.float64), 0, None)
    s = np.nan_to_num(s, nan=0.0, posinf=0.0)
    n = len(s)
    total = s.sum()
    if not total > 0:
        return np.array([k / n for k in counts], dtype=np.float64)
    cum = np.concatenate([[0.0], np.cumsum(np.sort(s)[::-1])])
    return np.array([cum[k] / total for k in counts], dtype=np.float64)


def top_indices(scores: torch.Tensor | np.ndarray, k: int) -> list[int]:
    """Indices of the ``k`` highest scores, ascending (ties keep the lower index)."""
    s = np.asarray(scores.detach().cpu().double() if isinstance(scores, torch.Tensor) else scores, dtype=np.float64)
    s = np.nan_to_num(s, nan=-np.inf)
    order = np.argsort(-s, kind="stable")
    return sorted(int(i) for i in order[:k])


def quant_proxy(model: nn.Module, layers: Sequence[str], precisions: Sequence[str]) -> dict[str, dict[str, float]]:
    """The default bit-width cost: relative weight quantisation error of each layer.

    ``cost(l, p) = ||Q_p(W_l) - W_l||^2 / ||W_l||^2`` with symmetric per-output-channel
    uniform quantisation (int8: 127 levels each side, int4: 7), fp16 by casting, fp32 0.
    A HAWQ-style Hessian-trace weighting, or a measured sensitivity, can replace it
    through ``plan(..., sensitivity=...)``.
    """
    mods = dict(model.named_modules())
    out: dict[str, dict[str, float]] = {}
    for name in layers:
        w = getattr(mods.get(name), "weight", None)
        row: dict[str, float] = {}
        w64 = None
        if isinstance(w, torch.Tensor):
            w64 = w.detach().cpu().numpy().astype(np.float64)
            w64 = w64.reshape(w64.shape[0], -1)
        norm = float((w64 ** 2).sum()) if w64 is not None else 0.0
        for p in precisions:
            if p == "fp32" or w64 is None or not norm > 0:
                row[p] = 0.0
                continue
            if p == "fp16":
                q = w64.astype(np.float16).astype(np.float64)
            else:
                levels = {"int8": 127, "int4": 7}.get(p, 127)
                scale = np.maximum(np.abs(w64).max(axis=1, keepdims=True), 1e-12) / levels
                q = np.clip(np.round(w64 / scale), -levels, levels) * scale
            row[p] = float(((q - w64) ** 2).sum()) / norm
        out[name] = row
    return out


# --------------------------------------------------------------------------- building


def group_param_bytes(model: nn.Module, graph: ChannelGraph) -> dict[str, float]:
    """Bytes per kept channel of a group from parameters other than conv/linear weights (biases, norms), fp32."""
    mods = dict(model.named_modules())
    per: dict[str, float] = {}
    for g in graph.groups:
        b = 0.0
        seen = set()
        for m in g.members:
            if (m.layer, m.dim) in seen or m.dim != "out":
                continue
            seen.add((m.layer, m.dim))
            mod = mods.get(m.layer)
            if mod is None:
                continue
            if m.kind in ("conv2d", "linear"):
                if getattr(mod, "bias", None) is not None:
                    b += 4.0
            elif m.kind != "select":
                n = sum(p.numel() for p in mod.parameters(recurse=False))
                if n and n % g.size == 0:
                    b += 4.0 * n / g.size
        per[g.id] = b
    return per


def safe_cost(fn: Callable[[LayerSignature], float], sig: LayerSignature) -> float:
    """``fn(sig)``, or inf when the predictor cannot price this configuration (e.g. an unprofiled precision)."""
    try:
        v = float(fn(sig))
    except (EdgepruneError, KeyError, ValueError, NotImplementedError, LookupError):
        return math.inf
    return v if math.isfinite(v) else math.inf


@dataclass
class _Space:
    """Factors (variables) of a problem and what is fixed."""

    factors: list[Factor] = field(default_factory=list)
    index: dict[tuple[str, str, str | None], int] = field(default_factory=dict)
    value: dict[int, np.ndarray] = field(default_factory=dict)
    constant_value: float = 0.0
    fixed_widths: dict[str, int] = field(default_factory=dict)
    fixed_prec: dict[str, dict[str, str]] = field(default_factory=dict)

    def add(self, factor: Factor, value: np.ndarray) -> None:
        self.index[(factor.kind, factor.key, factor.target)] = len(self.factors)
        self.value[len(self.factors)] = value
        self.factors.append(factor)

    def group(self, gid: str | None) -> int | None:
        return None if gid is None else self.index.get(("group", gid, None))


def _space(graph: ChannelGraph, ch: Choices) -> _Space:
    """Group factors valued by retained importance, precision factors (one per layer and target) by bit-width cost.

    Each target's engine pays its own bit-width cost (they add up): a plan for one target
    of several is never worse than the joint plan, and one target's plan is unchanged.
    """
    sp = _Space()
    for g in graph.groups:
        c = ch.counts.get(g.id, [g.size])
        w = float(ch.weights.get(g.id, 1.0))
        u = unit_of(g)
        curve = (retained_curve(ch.blocks[g.id], [k // u for k in c]) if g.id in ch.blocks else np.ones(len(c))) * w
        if len(c) == 1:
            sp.fixed_widths[g.id] = c[0]
            sp.constant_value += float(curve[0])
        else:
            sp.add(Factor("group", g.id, list(c)), curve)
    for t, per in ch.precisions.items():
        for name in graph.layers:
            ps = per.get(name, ["fp32"])
            pen = np.array([-float(ch.penalty.get(name, {}).get(p, 0.0)) for p in ps])
            if len(ps) == 1:
                sp.fixed_prec.setdefault(t, {})[name] = ps[0]
                sp.constant_value += float(pen[0])
            else:
                sp.add(Factor("prec", name, list(ps), t), pen)
    return sp


def _cost_fns(ch: Choices) -> dict[str, Callable[[LayerSignature], float]]:
    """Per-layer cost of every metric key, from the registry (latency shares from each target's predictor)."""
    fns: dict[str, Callable[[LayerSignature], float]] = {}
    for t, p in ch.predictors.items():
        base = float(p.model_cost({}))
        # a layer's share of the model cost is its marginal contribution to ``model_cost``: exact for every
        # predictor whose model cost is a constant plus a sum over layers (calibrated a*sum + b*features + offset)
        fns[f"lat:{t}"] = lambda s, p=p, base=base: float(p.model_cost({"layer": s})) - base
    for m in metrics().values():
        if not m.per_target:
            fns[m.name] = lambda s, m=m: m.layer_cost(s)
    return fns


class _Priced:
    """Cached ``safe_cost`` per (metric key, signature)."""

    def __init__(self, fns: Mapping[str, Callable[[LayerSignature], float]]) -> None:
        self.fns, self.cache = fns, {}

    def __call__(self, key: str, sig: LayerSignature) -> float:
        v = self.cache.get((key, sig))
        if v is None:
            v = self.cache[(key, sig)] = safe_cost(self.fns[key], sig)
        return v


def _constants(model: nn.Module, graph: ChannelGraph, ch: Choices, sp: _Space, cost: _Priced,
               keys: list[str]) -> dict[str, float]:
    """Costs no choice changes: predictor offsets, biases/norms of fixed groups, parameters outside conv/linear."""
    from edgeprune.metrics import model_bytes

    constants = {m: 0.0 for m in keys}
    for t, p in ch.predictors.items():
        dense_t = graph.signatures({}, ch.dense_dtypes(t))
        layer_sum = sum(cost(f"lat:{t}", s) for s in dense_t.values())
        # the base term plus whatever is not additive at the dense point (zero for additive predictors)
        constants[f"lat:{t}"] = float(p.model_cost(dense_t)) - layer_sum
    if "model_bytes" in constants:
        per_channel = group_param_bytes(model, graph)
        sizes = {g.id: g.size for g in graph.groups}
        dense_sigs = graph.signatures()
        variable = sum(weight_bytes(s) for s in dense_sigs.values()) + sum(per_channel[g] * sizes[g] for g in per_channel)
        constants["model_bytes"] = float(model_bytes(model)) - variable
        constants["model_bytes"] += sum(per_channel.get(gid, 0.0) * k for gid, k in sp.fixed_widths.items())
    return constants


def _param_tables(model: nn.Module, graph: ChannelGraph, sp: _Space, keys: list[str]) -> list[LayerTable]:
    """Per-channel parameter bytes of variable groups, on a pseudo-layer with that group as its only axis."""
    if "model_bytes" not in keys:
        return []
    per_channel = group_param_bytes(model, graph)
    tables = []
    for g in graph.groups:
        fi = sp.group(g.id)
        if fi is not None and per_channel.get(g.id, 0.0):
            arr = {m: np.zeros(len(sp.factors[fi].values)) for m in keys}
            arr["model_bytes"] = np.array([per_channel[g.id] * k for k in sp.factors[fi].values], dtype=np.float64)
            tables.append(LayerTable(f"<params of {g.id}>", [fi], arr))
    return tables


def _axes(name: str, info: Any, sp: _Space, target: str) -> tuple[list[int], list[str]]:
    """The factors a layer's cost on ``target`` depends on, and the role of each (in, out, inout, prec)."""
    axes: list[int] = []
    roles: list[str] = []
    gin, gout = sp.group(info.in_group), sp.group(info.out_group)
    if gin is not None and info.in_group == info.out_group:
        axes, roles = [gin], ["inout"]
    else:
        for fi, role in ((gin, "in"), (gout, "out")):
            if fi is not None:
                axes.append(fi)
                roles.append(role)
    fp = sp.index.get(("prec", name, target))
    if fp is not None:
        axes.append(fp)
        roles.append("prec")
    return axes, roles


def _layer_table(name: str, info: Any, sp: _Space, target: str, cost: _Priced, keys: list[str],
                 priced: list[str], constants: dict[str, float], maxed: Sequence[str]) -> LayerTable:
    """One layer's table on ``target`` over its axes; ``priced`` metrics get costs, the other ``keys`` zeros."""
    sig = info.signature
    axes, roles = _axes(name, info, sp, target)
    base_in = sp.fixed_widths.get(info.in_group, sig.in_channels) if info.in_group is not None else sig.in_channels
    base_out = sp.fixed_widths.get(info.out_group, sig.out_channels) if info.out_group is not None else sig.out_channels
    base_prec = sp.fixed_prec.get(target, {}).get(name, sig.dtype)
    shape = [len(sp.factors[a].values) for a in axes]
    arrays = {m: np.zeros(shape, dtype=np.float64) for m in keys}
    for combo in itertools.product(*[range(n) for n in shape]):
        cin, cout, prec = base_in, base_out, base_prec
        for a, role, i in zip(axes, roles, combo):
            v = sp.factors[a].values[i]
            if role in ("in", "inout"):
                cin = v
            if role in ("out", "inout"):
                cout = v
            if role == "prec":
                prec = v
        s = sig.with_channels(cin, cout, prec)
        for m in priced:
            arrays[m][combo] = cost(m, s)
    if not axes:
        for m in priced:
            if m not in maxed:  # a fixed layer still bounds a max metric: it stays as a 0-axis table
                constants[m] += float(arrays[m][()])
        return LayerTable(name, [], {m: (arrays[m] if m in maxed else np.zeros(())) for m in keys})
    if len(roles) >= 2 and roles[0] == "in" and roles[1] == "out" and axes[0] > axes[1]:
        # group axes in factor order, so layers coupling the same two groups share one pair table
        axes[0], axes[1] = axes[1], axes[0]
        arrays = {m: np.swapaxes(a, 0, 1) for m, a in arrays.items()}
    return LayerTable(name, axes, arrays)


def build_problem(model: nn.Module, graph: ChannelGraph, choices: Choices, limits: Mapping[str, float]) -> Problem:
    """Tabulate every layer's cost over its axes and every group's retained importance.

    ``choices`` (:func:`edgeprune.plan.choices.build_choices`) says what may be chosen;
    ``limits`` are the resolved limits keyed by metric (``lat:<target>``,
    ``model_bytes``, ``macs``, ``peak_memory``; :meth:`edgeprune.budget.Limits.limited`).
    """
    sp = _space(graph, choices)
    model_keys = [m.name for m in metrics().values() if not m.per_target]
    keys = [f"lat:{t}" for t in choices.predictors] + model_keys
    maxed = tuple(m.name for m in metrics().values() if m.reduce == "max")
    cost = _Priced(_cost_fns(choices))
    constants = _constants(model, graph, choices, sp, cost, keys)
    tables = _param_tables(model, graph, sp, keys)
    for name, info in graph.layers.items():
        for t in choices.predictors:
            priced = [f"lat:{t}"] + (model_keys if t == choices.primary else [])
            tables.append(_layer_table(name, info, sp, t, cost, keys, priced, constants, maxed))
    for m, v in constants.items():
        if not math.isfinite(v):
            raise BadInput(f"the predictor for {m.removeprefix('lat:')} cannot price a layer that no choice changes")
    return Problem(sp.factors, tables, sp.value, constants, sp.constant_value, dict(limits), keys, sp.fixed_widths,
                   sp.fixed_prec, maxed)


def evaluate(problem: Problem, choice: Mapping[int, int]) -> tuple[float, dict[str, float]]:
    """(objective, {metric: total}) of one assignment ``{factor index: value index}`` (max metrics: the max)."""
    obj = problem.constant_value + sum(float(problem.value[f][i]) for f, i in choice.items())
    totals = {m: (0.0 if m in problem.maxed else problem.constants[m]) for m in problem.metrics}
    for t in problem.layers:
        idx = tuple(choice[a] for a in t.axes)
        for m in problem.metrics:
            v = float(t.costs[m][idx])
            totals[m] = max(totals[m], v) if m in problem.maxed else totals[m] + v
    return obj, totals
