"""Cost tables: what every choice (kept channels x precision) costs per layer, for every budget metric.

A layer's cost depends on the kept counts of its in-group and out-group and on
its precision, so each layer gets one table indexed by the *axes* it depends on
(the in-group's allowed counts, the out-group's allowed counts, the layer's
precisions; fixed dimensions are not axes). The solver links each table to the
one-hot choice variables of its axes.

Metrics (all linear in the table entries, so every budget is a linear constraint):

- ``lat:<target>``: the layer's marginal share of ``predictor.model_cost`` in the
  predictor's unit (ms or cycles): ``model_cost({l: sig}) - model_cost({})``. The
  model's total is the sum plus ``model_cost(dense) - sum(shares at dense)``, so
  totals equal ``predictor.model_cost`` exactly whenever the model cost is a
  constant plus a sum over layers (plain layer sums, and the profiler's calibrated
  ``a * layer_sum + b * unaligned_activations + offset``); :func:`plan` checks the
  chosen plan with ``model_cost`` itself and flags any difference.
- ``model_bytes``: stored weights as :func:`edgeprune.metrics.model_bytes` counts
  them: conv/linear weights at the layer's bit-width (fp32 32, fp16 16, int8 8,
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

from edgeprune.errors import BadInput, EdgepruneError
from edgeprune.graph import ChannelGraph
from edgeprune.graph.signature import LayerSignature

WEIGHT_BITS = {"fp32": 32, "fp16": 16, "int8": 8, "int4": 4}
ACT_BYTES = {"fp32": 4.0, "fp16": 2.0, "int8": 1.0, "int4": 1.0}
_PREC_ORDER = ("fp32", "fp16", "int8", "int4")


def sort_precisions(precisions: Sequence[str]) -> list[str]:
    """Precisions in a stable order, widest first."""
    return sorted(set(precisions), key=lambda p: _PREC_ORDER.index(p) if p in _PREC_ORDER else 99)


# --------------------------------------------------------------------------- per-signature formulas


def weight_count(sig: LayerSignature) -> int:
    """Weights of a conv/linear layer (no bias)."""
    groups = sig.in_channels if sig.groups == -1 else max(sig.groups, 1)
    return sig.out_channels * (sig.in_channels // groups) * sig.kernel[0] * sig.kernel[1]


def weight_bytes(sig: LayerSignature) -> float:
    """Stored bytes of the layer's weight tensor at its precision (as metrics.model_bytes counts it)."""
    return float(weight_count(sig) * WEIGHT_BITS.get(sig.dtype, 32) // 8)


def activation_bytes(sig: LayerSignature) -> float:
    """The peak-memory proxy of one layer: input + output (+ residual operand) activations, batch 1."""
    ih, iw = sig.in_hw
    oh, ow = sig.out_hw
    out = sig.out_channels * oh * ow
    if "add" in sig.post.split("+"):
        out *= 2
    return (sig.in_channels * ih * iw + out) * ACT_BYTES.get(sig.dtype, 4.0)


# --------------------------------------------------------------------------- the problem


@dataclass
class Factor:
    """One discrete decision: a group's kept count or a layer's precision."""

    kind: str  # "group" or "prec"
    key: str  # group id or layer name
    values: list[Any]


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
    limits: dict[str, float]  # metric -> limit (sum metrics) ; "peak_memory" is per layer
    metrics: list[str]  # every metric tabulated
    fixed_widths: dict[str, int] = field(default_factory=dict)  # groups with one allowed count
    fixed_precisions: dict[str, str] = field(default_factory=dict)  # layers with one allowed precision

    def factor_index(self, kind: str, key: str) -> int | None:
        """Index of the factor for (kind, key), or None."""
        for i, f in enumerate(self.factors):
            if f.kind == kind and f.key == key:
                return i
        return None


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


def total_param_bytes(model: nn.Module) -> float:
    """All parameters at 32 bits (the dense model's stored size)."""
    return float(sum(p.numel() for p in model.parameters()) * 4)


def safe_cost(fn: Callable[[LayerSignature], float], sig: LayerSignature) -> float:
    """``fn(sig)``, or inf when the predictor cannot price this configuration (e.g. an unprofiled precision)."""
    try:
        v = float(fn(sig))
    except (EdgepruneError, KeyError, ValueError, NotImplementedError, LookupError):
        return math.inf
    return v if math.isfinite(v) else math.inf


def build_problem(
    model: nn.Module,
    graph: ChannelGraph,
    scores: Mapping[str, Any],
    counts: Mapping[str, list[int]],
    precisions: Mapping[str, list[str]],
    predictors: Mapping[str, Any],
    limits: Mapping[str, float],
    penalty: Mapping[str, Mapping[str, float]],
    group_weights: Mapping[str, float] | None = None,
) -> Problem:
    """Tabulate every layer's cost over its axes and every group's retained importance.

    ``counts[gid]`` are the allowed kept counts of each group in ``graph`` (one
    entry = fixed), ``precisions[layer]`` the allowed precisions of each layer,
    ``limits`` the resolved limits keyed by metric (``lat:<target>``,
    ``model_bytes``, ``macs``, ``peak_memory``), ``penalty[layer][precision]``
    the bit-width cost subtracted from the objective.
    """
    group_weights = group_weights or {}
    factors: list[Factor] = []
    index: dict[tuple[str, str], int] = {}
    value: dict[int, np.ndarray] = {}
    constant_value = 0.0
    fixed_widths: dict[str, int] = {}
    sizes = {g.id: g.size for g in graph.groups}
    for g in graph.groups:
        c = counts.get(g.id, [g.size])
        w = float(group_weights.get(g.id, 1.0))
        curve = retained_curve(scores[g.id], c) * w if g.id in scores else np.ones(len(c)) * w
        if len(c) == 1:
            fixed_widths[g.id] = c[0]
            constant_value += float(curve[0])
            continue
        index[("group", g.id)] = len(factors)
        value[len(factors)] = curve
        factors.append(Factor("group", g.id, list(c)))
    fixed_prec: dict[str, str] = {}
    for name in graph.layers:
        ps = precisions.get(name, ["fp32"])
        pen = np.array([-float(penalty.get(name, {}).get(p, 0.0)) for p in ps])
        if len(ps) == 1:
            fixed_prec[name] = ps[0]
            constant_value += float(pen[0])
            continue
        index[("prec", name)] = len(factors)
        value[len(factors)] = pen
        factors.append(Factor("prec", name, list(ps)))

    metrics = [f"lat:{t}" for t in predictors] + ["model_bytes", "macs", "peak_memory"]
    # a layer's share of the model cost is its marginal contribution to ``model_cost``:
    # exact for every predictor whose model cost is a constant plus a sum over layers
    # (layer costs, calibrated as a*sum + b*features + offset, ...)
    bases = {t: float(p.model_cost({})) for t, p in predictors.items()}
    fns: dict[str, Callable[[LayerSignature], float]] = {
        f"lat:{t}": (lambda s, p=p, b=bases[t]: float(p.model_cost({"layer": s})) - b) for t, p in predictors.items()
    }
    fns["model_bytes"] = weight_bytes
    fns["macs"] = lambda s: float(s.macs)
    fns["peak_memory"] = activation_bytes
    cache: dict[tuple[str, LayerSignature], float] = {}

    def cost(metric: str, sig: LayerSignature) -> float:
        key = (metric, sig)
        v = cache.get(key)
        if v is None:
            v = safe_cost(fns[metric], sig)
            cache[key] = v
        return v

    # constants: predictor offsets, biases/norms of fixed groups, other parameters
    dense_sigs = graph.signatures()
    constants: dict[str, float] = {m: 0.0 for m in metrics}
    for t, p in predictors.items():
        layer_sum = sum(cost(f"lat:{t}", s) for s in dense_sigs.values())
        # the base term plus whatever is not additive at the dense point (zero for additive predictors)
        constants[f"lat:{t}"] = float(p.model_cost(dense_sigs)) - layer_sum
    per_channel = group_param_bytes(model, graph)
    dense_bytes = total_param_bytes(model)
    variable_dense = sum(weight_bytes(s) for s in dense_sigs.values()) + sum(per_channel[g] * sizes[g] for g in per_channel)
    constants["model_bytes"] = dense_bytes - variable_dense
    for gid, k in fixed_widths.items():
        constants["model_bytes"] += per_channel.get(gid, 0.0) * k
    tables: list[LayerTable] = []
    # per-channel parameter bytes of variable groups ride on a pseudo-layer with that group as its only axis
    for gid in sizes:
        fi = index.get(("group", gid))
        if fi is not None and per_channel.get(gid, 0.0):
            arr = {m: np.zeros(len(factors[fi].values)) for m in metrics}
            arr["model_bytes"] = np.array([per_channel[gid] * k for k in factors[fi].values], dtype=np.float64)
            tables.append(LayerTable(f"<params of {gid}>", [fi], arr))

    for name, info in graph.layers.items():
        sig = info.signature
        axes: list[int] = []
        roles: list[str] = []  # "in", "out", "inout", "prec"
        gin, gout = info.in_group, info.out_group
        if gin is not None and gin == gout and ("group", gin) in index:
            axes.append(index[("group", gin)])
            roles.append("inout")
        else:
            if gin is not None and ("group", gin) in index:
                axes.append(index[("group", gin)])
                roles.append("in")
            if gout is not None and ("group", gout) in index:
                axes.append(index[("group", gout)])
                roles.append("out")
        if ("prec", name) in index:
            axes.append(index[("prec", name)])
            roles.append("prec")
        base_in = fixed_widths.get(gin, sig.in_channels) if gin is not None else sig.in_channels
        base_out = fixed_widths.get(gout, sig.out_channels) if gout is not None else sig.out_channels
        base_prec = fixed_prec.get(name, sig.dtype)
        shape = [len(factors[a].values) for a in axes]
        arrays = {m: np.zeros(shape, dtype=np.float64) for m in metrics}
        for combo in itertools.product(*[range(n) for n in shape]):
            cin, cout, prec = base_in, base_out, base_prec
            for a, role, i in zip(axes, roles, combo):
                v = factors[a].values[i]
                if role == "in":
                    cin = v
                elif role == "out":
                    cout = v
                elif role == "inout":
                    cin = cout = v
                else:
                    prec = v
            s = sig.with_channels(cin, cout, prec)
            for m in metrics:
                arrays[m][combo] = cost(m, s)
        if not axes:
            for m in metrics:
                v = float(arrays[m][()])
                if m == "peak_memory":
                    # a fixed layer still bounds peak memory: keep it as a 0-axis table
                    continue
                constants[m] += v
            tables.append(LayerTable(name, [], {m: (arrays[m] if m == "peak_memory" else np.zeros(())) for m in metrics}))
            continue
        if len(roles) >= 2 and roles[0] == "in" and roles[1] == "out" and axes[0] > axes[1]:
            # group axes in factor order, so layers coupling the same two groups share one pair table
            axes[0], axes[1] = axes[1], axes[0]
            arrays = {m: np.swapaxes(a, 0, 1) for m, a in arrays.items()}
        tables.append(LayerTable(name, axes, arrays))
    for m, v in constants.items():
        if not math.isfinite(v):
            raise BadInput(f"the predictor for {m.removeprefix('lat:')} cannot price a layer that no choice changes")
    return Problem(factors, tables, value, constants, constant_value, dict(limits), metrics, fixed_widths, fixed_prec)


def evaluate(problem: Problem, choice: Mapping[int, int]) -> tuple[float, dict[str, float]]:
    """(objective, {metric: total}) of one assignment ``{factor index: value index}`` (peak_memory = max)."""
    obj = problem.constant_value + sum(float(problem.value[f][i]) for f, i in choice.items())
    totals = {m: problem.constants[m] for m in problem.metrics if m != "peak_memory"}
    peak = 0.0
    for t in problem.layers:
        idx = tuple(choice[a] for a in t.axes)
        for m in problem.metrics:
            v = float(t.costs[m][idx])
            if m == "peak_memory":
                peak = max(peak, v)
            else:
                totals[m] += v
    totals["peak_memory"] = peak
    return obj, totals
