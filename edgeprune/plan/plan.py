"""``plan()``: channels and bit-widths per group/layer under every budget, and the ``Plan`` it returns."""
from __future__ import annotations

import fnmatch
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import reduce
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeprune.config import Budget, Limit, Target, get_target
from edgeprune.errors import BadInput, BudgetMissed
from edgeprune.graph import ChannelGraph, channel_groups, example_input
from edgeprune.plan import costs as C
from edgeprune.plan import milp
from edgeprune.prune.granularity import allowed_counts

SCHEMA = "edgeprune-plan"
VERSION = 1
DENSE_PRECISION = "fp32"


# --------------------------------------------------------------------------- the result


@dataclass
class GroupPlan:
    """What the plan keeps of one channel group (indices into the model the plan was made for)."""

    id: str
    size: int
    kept: int
    indices: list[int]
    frozen: bool = False
    retained: float = 1.0  # R_g(kept): share of the group's importance kept


@dataclass
class Plan:
    """A solved plan: per group the kept channels, per layer the precision, predicted costs per target."""

    groups: dict[str, GroupPlan]
    precisions: dict[str, str]
    layers: dict[str, dict[str, Any]]  # name -> in_channels, out_channels, precision, cost {target: value}
    targets: dict[str, dict[str, Any]]  # name -> unit, predicted, limit, dense, dense_source
    metrics: dict[str, dict[str, Any]]  # model_bytes / macs / peak_memory -> predicted, limit, dense
    objective: float
    importance: float
    quant_penalty: float
    solver: dict[str, Any]
    feasible: bool = True
    budget: str = ""
    granularity: int = 1
    allowed_precisions: list[str] = field(default_factory=lambda: ["fp32"])
    model: str = ""
    notes: list[str] = field(default_factory=list)

    # ---- use
    @property
    def keep(self) -> dict[str, list[int]]:
        """``{group_id: kept indices}`` for :func:`edgeprune.prune` (groups kept whole are left out)."""
        return {gid: list(g.indices) for gid, g in self.groups.items() if g.kept < g.size}

    @property
    def widths(self) -> dict[str, int]:
        """``{group_id: kept count}`` for every group."""
        return {gid: g.kept for gid, g in self.groups.items()}

    @property
    def wall_s(self) -> float:
        """Solver wall time (seconds), building the cost tables included."""
        return float(self.solver.get("wall_s", 0.0))

    # ---- serialisation
    def to_dict(self) -> dict[str, Any]:
        """The plan.json object (docs/plan.md)."""
        d = asdict(self)
        d["groups"] = {gid: {k: v for k, v in g.items() if k != "id"} for gid, g in d["groups"].items()}
        return {"schema": SCHEMA, "version": VERSION, **d}

    def to_json(self) -> str:
        """plan.json text."""
        return json.dumps(self.to_dict(), indent=2, default=_default) + "\n"

    @classmethod
    def from_json(cls, data: str | Mapping[str, Any]) -> Plan:
        """Inverse of :meth:`to_json` (accepts the text or the parsed object)."""
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except json.JSONDecodeError as err:
                raise BadInput(f"malformed plan JSON: {err.msg} at line {err.lineno}") from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Plan:
        """Inverse of :meth:`to_dict`, with a clear message for another schema or version."""
        if not isinstance(d, Mapping) or d.get("schema") != SCHEMA:
            raise BadInput(f"not an edgeprune plan (schema {d.get('schema') if isinstance(d, Mapping) else None!r}, expected {SCHEMA!r})")
        if d.get("version") != VERSION:
            raise BadInput(f"plan schema version {d.get('version')!r} is not supported (this edgeprune reads version {VERSION})")
        try:
            groups = {gid: GroupPlan(id=gid, **g) for gid, g in d["groups"].items()}
            fields = {k: d[k] for k in ("precisions", "layers", "targets", "metrics", "objective", "importance",
                                        "quant_penalty", "solver")}
            opt = {k: d[k] for k in ("feasible", "budget", "granularity", "allowed_precisions", "model", "notes") if k in d}
        except (KeyError, TypeError) as err:
            raise BadInput(f"plan file is missing or has a bad field: {err}") from None
        return cls(groups=groups, **fields, **opt)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write plan.json atomically."""
        from edgeprune.fileio import write_text

        return write_text(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Plan:
        """Read a plan.json."""
        from edgeprune.fileio import read_json

        return cls.from_dict(read_json(path, "plan file"))

    # ---- people
    def summary_rows(self) -> list[tuple[Any, ...]]:
        """One row per group: (group, size, kept, kept %, retained importance, precisions of the layers it feeds out of)."""
        by_out: dict[str, list[str]] = {}
        for name, info in self.layers.items():
            if info.get("out_group"):
                by_out.setdefault(info["out_group"], []).append(self.precisions.get(name, DENSE_PRECISION))
        rows = []
        for gid, g in self.groups.items():
            precs = by_out.get(gid, [])
            text = ", ".join(f"{p}x{precs.count(p)}" for p in C.sort_precisions(precs)) if precs else "-"
            rows.append((gid + (" (frozen)" if g.frozen else ""), g.size, g.kept, f"{100.0 * g.kept / g.size:.0f}%",
                         round(g.retained, 4), text))
        return rows

    SUMMARY_COLUMNS = ("group", "size", "kept", "kept %", "retained", "precisions (producers)")

    def budget_rows(self) -> list[tuple[Any, ...]]:
        """One row per cost: (what, predicted, limit, dense, unit)."""
        rows = []
        for t, info in self.targets.items():
            rows.append((f"latency {t}", info["predicted"], _fmt_opt(info.get("limit")), info.get("dense"), info["unit"]))
        units = {"model_bytes": "bytes", "macs": "MACs", "peak_memory": "bytes"}
        for m, info in self.metrics.items():
            rows.append((m, info["predicted"], _fmt_opt(info.get("limit")), info.get("dense"), units.get(m, "")))
        return rows

    BUDGET_COLUMNS = ("cost", "predicted", "limit", "dense", "unit")


def _fmt_opt(v: Any) -> Any:
    return "-" if v is None else v


def _default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# --------------------------------------------------------------------------- inputs


def _predictor_of(obj: Any) -> Any:
    """A Predictor from a Predictor or a Profile."""
    if hasattr(obj, "layer_cost") and hasattr(obj, "model_cost"):
        return obj
    if hasattr(obj, "predictor"):
        return obj.predictor()
    raise BadInput(f"not a predictor or profile: {type(obj).__name__}")


def _normalise_predictors(predictors: Mapping[Any, Any]) -> tuple[dict[str, Any], dict[str, Target]]:
    preds: dict[str, Any] = {}
    tgts: dict[str, Target] = {}
    if not predictors:
        raise BadInput("plan needs at least one target predictor (profile)")
    for key, val in predictors.items():
        name = key.name if isinstance(key, Target) else str(key)
        if isinstance(key, Target):
            tgts[name] = key
        preds[name] = _predictor_of(val)
    return preds, tgts


def _resolve_targets(names: Sequence[str], given: Any, from_keys: Mapping[str, Target]) -> dict[str, Target | None]:
    out: dict[str, Target | None] = {n: from_keys.get(n) for n in names}
    if given is not None:
        items = given.values() if isinstance(given, Mapping) else given
        for t in items:
            tt = get_target(t)
            out[tt.name] = tt
    for n in names:
        if out.get(n) is None:
            try:
                out[n] = get_target(n)
            except BadInput:
                out[n] = None  # a predictor for a target without a file (tests, ad-hoc profiles)
    return out


def resolve_granularity(budget: Budget, targets: Mapping[str, Target | None], granularity: int | None = None) -> int:
    """Explicit argument > budget's ``granularity=`` > least common multiple of the targets' channel multiples."""
    if granularity is not None:
        g = int(granularity)
    elif budget.granularity:
        g = int(budget.granularity)
    else:
        g = reduce(math.lcm, [t.channel_multiple for t in targets.values() if t is not None], 1)
    if g < 1:
        raise BadInput(f"granularity must be >= 1, got {g}")
    return g


def resolve_precisions(targets: Mapping[str, Target | None], precisions: Sequence[str] | None = None) -> list[str]:
    """Explicit list > precisions every known target supports > fp32."""
    if precisions is not None:
        ps = list(precisions)
        bad = [p for p in ps if p not in C.WEIGHT_BITS]
        if bad or not ps:
            raise BadInput(f"unknown precision {bad[0] if bad else '(none)'!r} (known: {', '.join(C.WEIGHT_BITS)})")
        return C.sort_precisions(ps)
    known = [set(t.precisions) for t in targets.values() if t is not None]
    if not known:
        return [DENSE_PRECISION]
    common = set.intersection(*known)
    if not common:
        names = ", ".join(f"{t.name}: {'/'.join(t.precisions)}" for t in targets.values() if t is not None)
        raise BadInput(f"the targets share no precision ({names}); plan them separately")
    return C.sort_precisions(common)


def frozen_groups(graph: ChannelGraph, patterns: Sequence[str]) -> set[str]:
    """Groups touched (in or out channels) by a layer matching any glob pattern."""
    frozen: set[str] = set()
    names = list(graph.layers)
    for pat in patterns:
        hit = [n for n in names if fnmatch.fnmatchcase(n, pat)]
        hit += [g.id for g in graph.groups if fnmatch.fnmatchcase(g.id, pat) and g.id not in hit]
        if not hit:
            raise BadInput(f"--freeze {pat!r} matches no layer (layers look like {', '.join(names[:3])}, ...)")
        for n in hit:
            info = graph.layers.get(n)
            if info is not None:
                frozen.update(g for g in (info.in_group, info.out_group) if g is not None)
            else:
                frozen.add(n)
    return frozen


WEIGHTINGS = ("importance", "uniform")


def group_weights_for(scores: Mapping[str, torch.Tensor], weighting: str = "importance") -> dict[str, float]:
    """Objective weight per scored group (see :func:`plan`'s ``weighting``); the weights average 1."""
    if weighting not in WEIGHTINGS:
        raise BadInput(f"unknown weighting {weighting!r} (choose from {', '.join(WEIGHTINGS)})")
    if weighting == "uniform" or not scores:
        return {gid: 1.0 for gid in scores}
    totals = {gid: float(torch.clamp(torch.as_tensor(s, dtype=torch.float64), min=0).sum()) for gid, s in scores.items()}
    mean = sum(totals.values()) / len(totals)
    if not math.isfinite(mean) or mean <= 0:  # no positive score anywhere: nothing to weigh by
        return {gid: 1.0 for gid in scores}
    return {gid: t / mean for gid, t in totals.items()}


def _check_scores(graph: ChannelGraph, scores: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    sizes = {g.id: g.size for g in graph.groups}
    for gid, s in scores.items():
        if gid not in sizes:
            continue  # scores of groups this model does not have (e.g. after pruning) are ignored
        t = torch.as_tensor(np.asarray(s.detach().cpu() if isinstance(s, torch.Tensor) else s, dtype=np.float64))
        if t.dim() != 1 or len(t) != sizes[gid]:
            raise BadInput(f"scores for group {gid} have shape {tuple(t.shape)}, expected ({sizes[gid]},)")
        out[gid] = t
    return out


def _unit(group: Any) -> int:
    return max(1, int(getattr(group, "unit", 1) or 1))


def _blocks(scores: torch.Tensor, unit: int) -> torch.Tensor:
    """Per-block scores (sum over each block of ``unit`` consecutive channels)."""
    return scores if unit == 1 else scores.reshape(-1, unit).sum(1)


class _BlockScores(dict):
    """Scores keyed by group, where the retained curve of a unit>1 group is taken over its blocks.

    build_problem calls ``retained_curve(scores[gid], counts)`` with channel counts; this
    mapping hands it block scores repeated per channel (each block's score spread evenly
    over its ``unit`` channels), which gives exactly the block curve at multiples of the unit.
    """

    def __init__(self, blocks: Mapping[str, torch.Tensor], graph: ChannelGraph) -> None:
        super().__init__()
        for gid, b in blocks.items():
            u = _unit(graph.group(gid))
            self[gid] = b if u == 1 else (b / u).repeat_interleave(u)


def _convert(lim: Limit, unit: str, target: Target | None, name: str) -> float:
    if lim.unit == unit:
        return lim.value
    clock = target.clock_mhz if target is not None else None
    if lim.unit == "ms" and unit == "cycles" and clock:
        return lim.value * 1e3 * clock
    if lim.unit == "cycles" and unit == "ms" and clock:
        return lim.value / (1e3 * clock)
    raise BadInput(f"latency budget for {name} is in {lim.unit} but its profile predicts {unit}"
                   + ("" if clock else " and the target has no clock_mhz to convert"))


def format_value(metric: str, value: float, unit: str = "") -> str:
    """A cost for people: ``3.1 ms``, ``40,000 cycles``, ``1.2 MB``, ``12.3M MACs``."""
    if not math.isfinite(value):
        return "unreachable"
    if metric.startswith("lat:"):
        return f"{value:,.0f} cycles" if unit == "cycles" else f"{value:.3g} ms"
    if metric in ("model_bytes", "peak_memory"):
        for div, suf in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
            if value >= div:
                return f"{value / div:.3g} {suf}"
        return f"{value:.0f} B"
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= div:
            return f"{value / div:.3g}{suf}"
    return f"{value:.0f}"


_WHAT = {"model_bytes": "model size", "macs": "MACs", "peak_memory": "peak activation memory"}


def _describe(metric: str) -> str:
    if metric.startswith("lat:"):
        return f"predicted latency on {metric[4:]}"
    return _WHAT.get(metric, metric)


# --------------------------------------------------------------------------- plan()


def plan(
    model: nn.Module,
    scores: Mapping[str, Any] | None,
    budget: Budget | str,
    predictors: Mapping[Any, Any],
    *,
    graph: ChannelGraph | None = None,
    example: Any = None,
    targets: Any = None,
    dense_costs: Mapping[str, float] | None = None,
    freeze: Sequence[str] = (),
    granularity: int | None = None,
    precisions: Sequence[str] | None = None,
    time_limit: float = 10.0,
    sensitivity: Mapping[str, Mapping[str, float]] | None = None,
    quant_weight: float = 1.0,
    group_weights: Mapping[str, float] | None = None,
    weighting: str = "importance",
    max_prune: float | None = None,
    model_name: str = "",
) -> Plan:
    """Choose per group the kept channels and per layer the precision, maximising retained importance.

    ``scores``: ``{group_id: per-channel scores}`` from :func:`edgeprune.importance`
    (None = every channel equal; groups without scores stay whole).
    ``budget``: a :class:`~edgeprune.config.Budget` or its text (``latency=0.5x,bytes=2MB``).
    ``predictors``: ``{target name or Target: Predictor or Profile}``; one latency
    limit per target (``latency@NAME=`` or ``latency=`` for all). Ratios resolve
    against ``dense_costs[target]`` when given (e.g. the measured dense latency),
    else against the predicted cost of the dense model.
    ``freeze``: layer-name glob patterns whose in and out channels stay whole.
    ``sensitivity``: ``{layer: {precision: cost}}`` replacing the default
    bit-width cost (relative weight quantisation error, :func:`costs.quant_proxy`),
    scaled by ``quant_weight``.
    ``weighting``: how groups trade against each other in the objective, which
    sums per group ``w_g * R_g(kept)`` (``R_g``: the share of the group's own
    importance kept). ``"importance"`` (default): ``w_g`` is the group's total
    score over the mean group total, so the objective is the model's retained
    importance and a group whose channels matter more (a residual stream
    coupling 19 layers) is not traded one for one against a single conv's
    inner channels. ``"uniform"``: ``w_g = 1``, every group's share counts
    alike (edgeprune 0.1's objective; on ResNet-56 it cut the last stage's
    stream to 16 of 64 channels and recovered 10 points worse than uniform
    pruning, docs/plan.md). ``group_weights`` given explicitly replace both.
    ``max_prune``: at most this fraction of any group's channels is removed (0.5: every
    group keeps at least half, rounded up to the granularity); None = no floor.

    Raises :class:`~edgeprune.errors.BudgetMissed` naming the smallest reachable
    value when no choice meets the budget.
    """
    if isinstance(budget, str):
        budget = Budget.parse(budget)
    preds, key_targets = _normalise_predictors(predictors)
    tmap = _resolve_targets(list(preds), targets, key_targets)
    if graph is None:
        if example is None:
            example = example_input(model)
        graph = channel_groups(model, example)
    gran = resolve_granularity(budget, tmap, granularity)
    allowed_prec = resolve_precisions(tmap, precisions)
    for t in budget.latency:
        if t != "*" and t not in preds:
            raise BadInput(f"budget names target {t!r} but no profile for it was given (targets: {', '.join(preds)})")
    if scores is None:
        scores = {g.id: torch.ones(g.size) for g in graph.prunable}
    score_t = _check_scores(graph, scores)
    if max_prune is not None and not 0.0 <= max_prune < 1.0:
        raise BadInput(f"max_prune must be in [0, 1), got {max_prune}")
    explicit_weights = group_weights
    if group_weights is None:
        group_weights = group_weights_for(score_t, weighting)
    frozen = frozen_groups(graph, freeze)
    counts: dict[str, list[int]] = {}
    for g in graph.groups:
        unit = _unit(g)
        if g.prunable and g.id not in frozen and g.id in score_t and g.size % unit == 0:
            allowed = allowed_counts(g.size, math.lcm(gran, unit))
            if max_prune is not None:
                floor = (1.0 - max_prune) * g.size - 1e-9
                allowed = [c for c in allowed if c >= floor] or [allowed[-1]]
            counts[g.id] = allowed
        else:
            counts[g.id] = [g.size]
    # groups with unit > 1 (grouped convs, attention heads) are ranked by whole blocks of `unit` channels
    block_scores = {gid: _blocks(s, _unit(graph.group(gid))) for gid, s in score_t.items()}
    prec_map = {name: list(allowed_prec) for name in graph.layers}

    # limits, resolved to absolute values in each metric's unit
    dense_sigs = graph.signatures()
    limits: dict[str, float] = {}
    target_info: dict[str, dict[str, Any]] = {}
    for name, p in preds.items():
        unit = getattr(p, "unit", "ms")
        predicted_dense = float(p.model_cost(dense_sigs))
        measured = None if dense_costs is None else dense_costs.get(name)
        dense = float(measured) if measured is not None else predicted_dense
        lim = budget.latency_for(name)
        limit = None
        if lim is not None:
            limit = lim.resolve(dense) if lim.is_ratio else _convert(lim, unit, tmap.get(name), name)
            limits[f"lat:{name}"] = float(limit)
        target_info[name] = {"unit": unit, "limit": limit, "dense": dense, "dense_predicted": predicted_dense,
                             "dense_source": "measured" if measured is not None else "predicted",
                             "budget": None if lim is None else str(lim)}
    dense_metrics = {
        "model_bytes": C.total_param_bytes(model),
        "macs": float(sum(s.macs for s in dense_sigs.values())),
        "peak_memory": max((C.activation_bytes(s) for s in dense_sigs.values()), default=0.0),
    }
    for m in ("model_bytes", "macs", "peak_memory"):
        lim = getattr(budget, m)
        if lim is not None:
            limits[m] = float(lim.resolve(dense_metrics[m]))

    if sensitivity is not None:
        penalty = {layer: {p: quant_weight * float(v) for p, v in row.items()} for layer, row in sensitivity.items()}
        pen_source = "given"
    elif len(allowed_prec) > 1:
        penalty = {layer: {p: quant_weight * v for p, v in row.items()}
                   for layer, row in C.quant_proxy(model, list(graph.layers), allowed_prec).items()}
        pen_source = "weight-quantisation-error proxy"
    else:
        penalty, pen_source = {}, "none (one precision)"

    import time

    t0, c0 = time.perf_counter(), time.process_time()
    problem = C.build_problem(model, graph, _BlockScores(block_scores, graph), counts, prec_map, preds, limits, penalty,
                              group_weights)
    build_s, build_cpu = time.perf_counter() - t0, time.process_time() - c0
    sol = milp.solve(problem, time_limit=time_limit)
    if sol.choice is None:
        if sol.status == "timeout":
            raise BudgetMissed(f"the solver found no plan within {time_limit:g} s (raise --time-limit or coarsen the granularity)")
        if sol.status == "error":
            raise BudgetMissed(f"the solver failed: {sol.message}")
        raise _missed(problem, limits, preds, time_limit)
    obj, totals = C.evaluate(problem, sol.choice)

    # decode
    widths = dict(problem.fixed_widths)
    chosen_prec = dict(problem.fixed_precisions)
    for fi, f in enumerate(problem.factors):
        v = f.values[sol.choice[fi]]
        (widths if f.kind == "group" else chosen_prec).__setitem__(f.key, v)
    groups: dict[str, GroupPlan] = {}
    importance_total = 0.0
    for g in graph.groups:
        k = widths[g.id]
        if g.id in score_t:
            u = _unit(g)
            idx = sorted(j * u + i for j in C.top_indices(block_scores[g.id], k // u) for i in range(u))
            r = float(C.retained_curve(block_scores[g.id], [k // u])[0])
        else:
            idx, r = list(range(g.size)), 1.0
        importance_total += r * float((group_weights or {}).get(g.id, 1.0))
        groups[g.id] = GroupPlan(g.id, g.size, k, idx, g.id in frozen, r)
    sigs = graph.signatures(widths, chosen_prec)
    layers = {}
    for name, info in graph.layers.items():
        s = sigs[name]
        layers[name] = {
            "precision": s.dtype, "in_channels": s.in_channels, "out_channels": s.out_channels,
            "in_group": info.in_group, "out_group": info.out_group,
            "cost": {t: C.safe_cost(p.layer_cost, s) for t, p in preds.items()},
        }
    notes: list[str] = []
    feasible = True
    for name, info in target_info.items():
        info["predicted"] = float(preds[name].model_cost(sigs))
        tabled = float(totals[f"lat:{name}"])
        if not math.isclose(info["predicted"], tabled, rel_tol=1e-6, abs_tol=1e-9):
            notes.append(f"the {name} predictor is not additive over layers: the solver's cost {tabled:.6g} differs "
                         f"from model_cost {info['predicted']:.6g}")
        if info["limit"] is not None and info["predicted"] > info["limit"] * (1 + 1e-6):
            feasible = False
            notes.append(f"predicted latency on {name} {info['predicted']:.6g} exceeds the budget {info['limit']:.6g}")
    metrics_out = {m: {"predicted": float(totals[m]), "limit": limits.get(m), "dense": dense_metrics[m]}
                   for m in ("model_bytes", "macs", "peak_memory")}
    penalty_total = importance_total - obj
    return Plan(
        groups=groups,
        precisions={n: chosen_prec.get(n, graph.layers[n].signature.dtype) for n in graph.layers},
        layers=layers,
        targets=target_info,
        metrics=metrics_out,
        objective=float(obj),
        importance=float(importance_total),
        quant_penalty=float(penalty_total),
        solver={"name": "milp-highs", "status": sol.status, "wall_s": sol.wall_s + build_s, "solve_s": sol.wall_s,
                "build_s": build_s,
                "cpu_s": sol.cpu_s + build_cpu, "mip_gap": sol.gap, "variables": sol.variables, "constraints": sol.constraints,
                "time_limit_s": time_limit, "bitwidth_cost": pen_source,
                "weighting": weighting if explicit_weights is None else "given", "max_prune": max_prune},
        feasible=feasible,
        budget=str(budget),
        granularity=gran,
        allowed_precisions=list(allowed_prec),
        model=model_name or type(model).__name__,
        notes=notes,
    )


def _missed(problem: C.Problem, limits: Mapping[str, float], preds: Mapping[str, Any], time_limit: float) -> BudgetMissed:
    """The BudgetMissed error naming the smallest reachable value of each limit that cannot be met."""
    parts, reachable = [], {}
    for metric, limit in limits.items():
        best = milp.minimum(problem, metric, time_limit)
        reachable[metric] = best
        if best > limit * (1 + 1e-9):
            unit = getattr(preds.get(metric[4:]), "unit", "ms") if metric.startswith("lat:") else ""
            parts.append(f"smallest {_describe(metric)} is {format_value(metric, best, unit)}, "
                         f"budget is {format_value(metric, limit, unit)}")
    if not parts:
        each = "; ".join(
            f"{_describe(m)} >= {format_value(m, v, getattr(preds.get(m[4:]), 'unit', 'ms') if m.startswith('lat:') else '')}"
            for m, v in reachable.items())
        parts = [f"each limit is reachable alone but not all at once ({each})"]
    err = BudgetMissed("; ".join(parts))
    err.reachable = reachable  # type: ignore[attr-defined]
    return err


# --------------------------------------------------------------------------- apply


def apply(model: nn.Module, plan: Plan, example: Any = None) -> nn.Module:
    """A new, physically smaller model: ``prune(model, plan.keep)``, precisions in ``edgeprune_precisions``."""
    from edgeprune.prune import prune

    mods = dict(model.named_modules())
    for gid, g in plan.groups.items():
        m = mods.get(gid)
        if m is None:
            raise BadInput(f"plan group {gid} is not a layer of this model (was the plan made for another model?)")
        size = getattr(m, "out_channels", getattr(m, "out_features", None))
        if size is not None and size != g.size:
            raise BadInput(f"plan group {gid} has {g.size} channels but the model has {size} (plan made for another model?)")
    small = prune(model, plan.keep, example)
    names = {n for n, _ in small.named_modules()}
    small.edgeprune_precisions = {n: p for n, p in plan.precisions.items() if n in names}
    return small
