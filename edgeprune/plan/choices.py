"""Step 1 of planning: what may be chosen (kept counts per group, precisions per layer and target) and what it is worth."""
from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import reduce
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeprune.config import Budget, Target, get_target
from edgeprune.errors import BadInput
from edgeprune.graph import ChannelGraph
from edgeprune.metrics import WEIGHT_BITS, sort_precisions
from edgeprune.plan.config import WEIGHTINGS, PlanConfig
from edgeprune.prune.granularity import allowed_counts

DENSE_PRECISION = "fp32"


@dataclass
class Choices:
    """The planner's decision space and objective weights, before any cost is tabulated.

    ``precisions[target][layer]``: the precisions ``target``'s engine may run the layer
    in. The channel decision (``counts``) is one for all targets; the precision is
    chosen per target (docs/plan.md, "several targets").
    """

    predictors: dict[str, Any]
    targets: dict[str, Target | None]
    counts: dict[str, list[int]]
    precisions: dict[str, dict[str, list[str]]]
    scores: dict[str, torch.Tensor]
    blocks: dict[str, torch.Tensor]
    weights: dict[str, float]
    frozen: set[str]
    granularity: int
    penalty: dict[str, dict[str, float]]
    penalty_source: str

    @property
    def primary(self) -> str:
        """The first target: model bytes and peak memory are counted at its precisions."""
        return next(iter(self.predictors))

    def dense_precision(self, target: str, layer: str) -> str:
        """The precision the dense model runs ``layer`` in on ``target``: fp32 if it may, else its widest."""
        ps = self.precisions[target][layer]
        return DENSE_PRECISION if DENSE_PRECISION in ps else ps[0]

    def dense_dtypes(self, target: str) -> dict[str, str]:
        """``{layer: dense precision}`` on ``target``."""
        return {n: self.dense_precision(target, n) for n in self.precisions[target]}

    def allowed(self) -> list[str]:
        """Every precision some target may use, widest first."""
        return sort_precisions(p for per in self.precisions.values() for ps in per.values() for p in ps)


def predictor_of(obj: Any) -> Any:
    """A Predictor from a Predictor or a Profile."""
    if hasattr(obj, "layer_cost") and hasattr(obj, "model_cost"):
        return obj
    if hasattr(obj, "predictor"):
        return obj.predictor()
    raise BadInput(f"not a predictor or profile: {type(obj).__name__}")


def normalise_predictors(predictors: Mapping[Any, Any]) -> tuple[dict[str, Any], dict[str, Target]]:
    """``({target name: Predictor}, {target name: Target})`` from keys that are names or Targets."""
    preds: dict[str, Any] = {}
    tgts: dict[str, Target] = {}
    if not predictors:
        raise BadInput("plan needs at least one target predictor (profile)")
    for key, val in predictors.items():
        name = key.name if isinstance(key, Target) else str(key)
        if isinstance(key, Target):
            tgts[name] = key
        preds[name] = predictor_of(val)
    return preds, tgts


def resolve_targets(names: Sequence[str], given: Any, from_keys: Mapping[str, Target]) -> dict[str, Target | None]:
    """A Target per predictor name: given ones, then predictor keys, then target files (None where none exists)."""
    out: dict[str, Target | None] = {n: from_keys.get(n) for n in names}
    if given is not None:
        for t in (given.values() if isinstance(given, Mapping) else given):
            tt = get_target(t)
            out[tt.name] = tt
    for n in names:
        if out.get(n) is None:
            try:
                out[n] = get_target(n)
            except BadInput:
                out[n] = None  # a predictor for a target without a file (tests, ad-hoc profiles)
    return {n: out[n] for n in names}


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


def target_precisions(targets: Mapping[str, Target | None], precisions: Sequence[str] | None = None) -> dict[str, list[str]]:
    """Per target, the precisions it may use: its own (fp32 without a target file), narrowed to ``precisions`` if given."""
    if precisions is not None:
        ps = list(precisions)
        bad = [p for p in ps if p not in WEIGHT_BITS]
        if bad or not ps:
            raise BadInput(f"unknown precision {bad[0] if bad else '(none)'!r} (known: {', '.join(WEIGHT_BITS)})")
    out: dict[str, list[str]] = {}
    for name, t in targets.items():
        own = list(t.precisions) if t is not None else ([DENSE_PRECISION] if precisions is None else list(precisions))
        use = [p for p in own if precisions is None or p in precisions]
        if not use:
            raise BadInput(f"target {name} runs none of the precisions asked ({', '.join(precisions or [])}; "
                           f"it runs {'/'.join(own)})")
        out[name] = sort_precisions(use)
    return out


def frozen_groups(graph: ChannelGraph, patterns: Sequence[str]) -> set[str]:
    """Groups touched (in or out channels) by a layer matching any glob pattern."""
    frozen: set[str] = set()
    names = list(graph.layers)
    for pat in patterns:
        hit = [n for n in names if fnmatch.fnmatchcase(n, pat)]
        hit += [g.id for g in graph.groups if fnmatch.fnmatchcase(g.id, pat) and g.id not in hit]
        if not hit:
            from edgeprune.errors import close_names

            hint = close_names(pat, names + [g.id for g in graph.groups]) or f"; layers look like {', '.join(names[:3])}, ..."
            raise BadInput(f"--freeze {pat!r} matches no layer or group{hint}")
        for n in hit:
            info = graph.layers.get(n)
            if info is not None:
                frozen.update(g for g in (info.in_group, info.out_group) if g is not None)
            else:
                frozen.add(n)
    return frozen


def group_weights_for(scores: Mapping[str, torch.Tensor], weighting: str = "importance") -> dict[str, float]:
    """Objective weight per scored group (docs/plan.md, "weighting"); the weights average 1."""
    if weighting not in WEIGHTINGS:
        raise BadInput(f"unknown weighting {weighting!r} (choose from {', '.join(WEIGHTINGS)})")
    if weighting == "uniform" or not scores:
        return {gid: 1.0 for gid in scores}
    totals = {gid: float(torch.clamp(torch.as_tensor(s, dtype=torch.float64), min=0).sum()) for gid, s in scores.items()}
    mean = sum(totals.values()) / len(totals)
    if not math.isfinite(mean) or mean <= 0:  # no positive score anywhere: nothing to weigh by
        return {gid: 1.0 for gid in scores}
    return {gid: t / mean for gid, t in totals.items()}


def check_scores(graph: ChannelGraph, scores: Mapping[str, Any] | None) -> dict[str, torch.Tensor]:
    """Scores as float64 tensors of each group's size (None: every prunable channel equal; unknown groups ignored)."""
    if scores is None:
        scores = {g.id: torch.ones(g.size) for g in graph.prunable}
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


def unit_of(group: Any) -> int:
    """Channels per indivisible block of a group (grouped convs, attention heads)."""
    return max(1, int(getattr(group, "unit", 1) or 1))


def _counts(graph: ChannelGraph, scores: Mapping[str, Any], frozen: set[str], gran: int,
            max_prune: float | None) -> dict[str, list[int]]:
    counts: dict[str, list[int]] = {}
    for g in graph.groups:
        unit = unit_of(g)
        if g.prunable and g.id not in frozen and g.id in scores and g.size % unit == 0:
            allowed = allowed_counts(g.size, math.lcm(gran, unit))
            if max_prune is not None:
                floor = (1.0 - max_prune) * g.size - 1e-9
                allowed = [c for c in allowed if c >= floor] or [allowed[-1]]
            counts[g.id] = allowed
        else:
            counts[g.id] = [g.size]
    return counts


def _penalty(model: nn.Module, graph: ChannelGraph, cfg: PlanConfig, allowed: list[str]) -> tuple[dict, str]:
    from edgeprune.plan.costs import quant_proxy

    if cfg.sensitivity is not None:
        return ({layer: {p: cfg.quant_weight * float(v) for p, v in row.items()} for layer, row in cfg.sensitivity.items()},
                "given")
    if len(allowed) > 1:
        return ({layer: {p: cfg.quant_weight * v for p, v in row.items()}
                 for layer, row in quant_proxy(model, list(graph.layers), allowed).items()},
                "weight-quantisation-error proxy")
    return {}, "none (one precision)"


def build_choices(model: nn.Module, graph: ChannelGraph, scores: Mapping[str, Any] | None, budget: Budget,
                  predictors: Mapping[Any, Any], targets: Any, cfg: PlanConfig) -> Choices:
    """Everything the planner may choose, with the objective's weights and bit-width costs."""
    preds, key_targets = normalise_predictors(predictors)
    tmap = resolve_targets(list(preds), targets, key_targets)
    gran = resolve_granularity(budget, tmap, cfg.granularity)
    per_target = target_precisions(tmap, cfg.precisions)
    score_t = check_scores(graph, scores)
    weights = dict(cfg.group_weights) if cfg.group_weights is not None else group_weights_for(score_t, cfg.weighting)
    frozen = frozen_groups(graph, cfg.freeze)
    blocks = {gid: s if unit_of(graph.group(gid)) == 1 else s.reshape(-1, unit_of(graph.group(gid))).sum(1)
              for gid, s in score_t.items()}
    precisions = {t: {name: list(ps) for name in graph.layers} for t, ps in per_target.items()}
    allowed = sort_precisions(p for ps in per_target.values() for p in ps)
    penalty, source = _penalty(model, graph, cfg, allowed)
    return Choices(preds, tmap, _counts(graph, score_t, frozen, gran, cfg.max_prune), precisions, score_t, blocks,
                   weights, frozen, gran, penalty, source)
