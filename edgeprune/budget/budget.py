"""Budgets: ``--budget`` text -> :class:`Budget` -> (once, against the dense model) :class:`Limits`."""
from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from edgeprune.budget.metric import (
    RATIO_UNITS,
    DenseContext,
    Metric,
    by_key,
    get_metric,
    metrics,
    time_metric,
)
from edgeprune.errors import BadInput

ALL = "*"
_SUFFIX = {"ms": " ms", "cycles": " cycles", "bytes": " B", "count": ""}
_PART = re.compile(r"([A-Za-z_]+)(?:@([\w.\-]+))?\s*=\s*([-+]?[0-9]*\.?[0-9]+(?:e[-+]?\d+)?)\s*([A-Za-z%]*)")


@dataclass(frozen=True)
class Limit:
    """One budget limit: an absolute value in its metric's unit, or a ratio of the dense model's value."""

    value: float
    unit: str  # the metric's unit ("ms", "cycles", "bytes", "count") or "ratio"

    @property
    def is_ratio(self) -> bool:
        """True for a fraction of the dense value (``0.6x``)."""
        return self.unit == "ratio"

    def resolve(self, dense: float) -> float:
        """The absolute limit, given the dense model's value in the same unit."""
        return self.value * dense if self.is_ratio else self.value

    def __str__(self) -> str:
        if self.is_ratio:
            return f"{self.value:g}x"
        return f"{self.value:g}{_SUFFIX.get(self.unit, ' ' + self.unit)}"


@dataclass(frozen=True)
class Budget:
    """What the compressed model must meet: ``limits[metric][target or "*"]``, any subset, plus a granularity.

    Per-target metrics (latency in ms, cycles) are keyed by target name, ``"*"``
    meaning every target of the run; the others are keyed ``"*"`` only.
    """

    limits: Mapping[str, Mapping[str, Limit]] = field(default_factory=dict)
    granularity: int | None = None

    @classmethod
    def build(cls, latency: Mapping[str, Limit] | None = None, granularity: int | None = None,
              **others: Limit | None) -> Budget:
        """From ``latency={target: Limit}`` (ms, cycles or ratio) and ``model_bytes=``/``macs=``/``peak_memory=`` Limits."""
        limits: dict[str, dict[str, Limit]] = {}
        for tgt, lim in (latency or {}).items():
            name = "cycles" if lim.unit == "cycles" else "latency"
            limits.setdefault(name, {})[tgt] = lim
        for name, lim in others.items():
            if lim is not None:
                limits[get_metric(name).name] = {ALL: lim}
        return cls(limits, granularity)

    @classmethod
    def parse(cls, text: str) -> Budget:
        """Parse ``latency=0.6x,bytes=2MB,latency@vta-pynq=40000cycles,macs=20M,granularity=8``."""
        if not text or not text.strip():
            raise BadInput("empty budget (example: --budget latency=0.6x)")
        limits: dict[str, dict[str, Limit]] = {}
        granularity = None
        for part in text.split(","):
            part = part.strip()
            m = _PART.fullmatch(part)
            if not m:
                raise BadInput(f"cannot parse budget {part!r} (expected KEY=VALUE[UNIT], e.g. latency=0.6x)")
            key, tgt, num, unit = m.group(1).lower(), m.group(2), float(m.group(3)), m.group(4).lower()
            if key == "granularity":
                if unit or num < 1 or num != int(num):
                    raise BadInput(f"budget {part!r}: granularity must be a positive integer")
                granularity = int(num)
                continue
            metric, lim = _parse_limit(part, key, num, unit)
            if tgt and not metric.per_target:
                raise BadInput(f"budget {part!r}: only latency takes @target")
            limits.setdefault(metric.name, {})[tgt or ALL] = lim
        return cls(limits, granularity)

    # ---- reading
    def get(self, metric: str, target: str = ALL) -> Limit | None:
        """The limit on ``metric`` for ``target`` (its own, else the one for every target)."""
        per = self.limits.get(metric, {})
        return per.get(target, per.get(ALL))

    def items(self) -> Iterator[tuple[str, str, Limit]]:
        """(metric, target or "*", limit) for every limit set."""
        for name, per in self.limits.items():
            for tgt, lim in per.items():
                yield name, tgt, lim

    @property
    def latency(self) -> dict[str, Limit]:
        """``{target or "*": Limit}`` over the time metrics (ms and cycles)."""
        out: dict[str, Limit] = {}
        for name, tgt, lim in self.items():
            if get_metric(name).time_unit:
                out[tgt] = lim
        return out

    def latency_for(self, target: str) -> Limit | None:
        """The time limit (ms, cycles or ratio) that applies to ``target``."""
        lat = self.latency
        return lat.get(target, lat.get(ALL))

    @property
    def model_bytes(self) -> Limit | None:
        """The model-size limit."""
        return self.get("model_bytes")

    @property
    def macs(self) -> Limit | None:
        """The MACs limit."""
        return self.get("macs")

    @property
    def peak_memory(self) -> Limit | None:
        """The peak-memory limit."""
        return self.get("peak_memory")

    def is_empty(self) -> bool:
        """True when no limit is set."""
        return not any(True for _ in self.items())

    def __str__(self) -> str:
        parts = []
        for name, tgt, lim in self.items():
            metric = get_metric(name)
            key = "latency" if metric.time_unit else name
            parts.append(f"{key}{'' if tgt == ALL else '@' + tgt}={lim}")
        if self.granularity:
            parts.append(f"granularity={self.granularity}")
        return ",".join(parts)

    # ---- resolving
    def resolve(self, dense: DenseContext, targets: Mapping[str, Any] | Sequence[Any] = ()) -> Limits:
        """Every limit as an absolute value in its metric's unit, ratios taken of the dense value; called once.

        ``targets``: target names (or ``{name: Target or None}``); each gets its
        time metric from its predictor's unit (``ms`` -> latency, ``cycles`` ->
        cycles, labelled simulated). A limit given in ms for a cycles target (or
        the reverse) converts through the target's ``clock_mhz``.
        """
        tmap = _target_map(targets, dense)
        for name, tgt, _ in self.items():
            if tgt != ALL and tgt not in tmap:
                raise BadInput(f"budget names target {tgt!r} but no profile for it was given "
                               f"(targets: {', '.join(tmap) or 'none'})")
        entries = [self._resolve_target(dense, name, target) for name, target in tmap.items()]
        for metric in metrics().values():
            if metric.per_target:
                continue
            lim = self.get(metric.name)
            value = metric.dense(dense)
            entries.append(Resolved(metric.name, None, None if lim is None else float(lim.resolve(value)), value,
                                    "model", None if lim is None else str(lim), None,
                                    lim.value if lim is not None and lim.is_ratio else None))
        return Limits(tuple(entries), self.granularity, str(self))

    def _resolve_target(self, dense: DenseContext, name: str, target: Any) -> Resolved:
        unit = dense.units.get(name) or getattr(dense.predictors.get(name), "unit", None) or "ms"
        metric = time_metric(unit)
        value = metric.dense(dense, name)
        predicted = None
        if name in dense.predictors:
            predicted = float(dense.predictors[name].model_cost(dense.signatures_for(name)))
        lim = self.latency_for(name)
        limit = None
        if lim is not None:
            limit = float(lim.resolve(value)) if lim.is_ratio else _convert(lim, unit, target, name)
        source = "measured" if name in dense.measured else "predicted"
        return Resolved(metric.name, name, limit, value, source, None if lim is None else str(lim), predicted,
                        lim.value if lim is not None and lim.is_ratio else None,
                        None if unit == metric.unit else unit)


def _parse_limit(part: str, key: str, num: float, unit: str) -> tuple[Metric, Limit]:
    named = by_key(key)
    if not named:
        known = ", ".join([m.aliases[0] if m.aliases else m.name for m in metrics().values()] + ["granularity"])
        raise BadInput(f"budget {part!r}: unknown key {key!r} (known: {known})")
    # a time key takes any time unit: latency=40000cycles is the cycles metric
    candidates = named + [m for m in metrics().values() if named[0].time_unit and m.time_unit and m not in named]
    every_unit = set(RATIO_UNITS).union(*(m.units for m in metrics().values()))
    if unit and unit not in every_unit:
        raise BadInput(f"budget {part!r}: unknown unit {unit!r}")
    if unit in RATIO_UNITS:
        metric, lim = named[0], Limit(num * RATIO_UNITS[unit], "ratio")
        if lim.value > 1.0:
            raise BadInput(f"budget {part!r}: a ratio above 1x is not a compression budget")
    else:
        fit = [m for m in candidates if (unit or m.default_unit) in m.units and (unit or m.default_unit is not None)]
        if not fit:
            if not unit:
                raise BadInput(f"budget {part!r}: unknown unit {unit!r}")
            raise BadInput(f"budget {part!r}: unit {unit!r} does not fit {key}")
        metric = fit[0]
        lim = Limit(num * metric.units[unit or metric.default_unit], metric.unit)
    if not num > 0:
        raise BadInput(f"budget {part}: must be positive, got {num:g}")
    return metric, lim


def _convert(lim: Limit, unit: str, target: Any, name: str) -> float:
    if lim.unit == unit:
        return float(lim.value)
    clock = getattr(target, "clock_mhz", None)
    if lim.unit == "ms" and unit == "cycles" and clock:
        return float(lim.value * 1e3 * clock)
    if lim.unit == "cycles" and unit == "ms" and clock:
        return float(lim.value / (1e3 * clock))
    raise BadInput(f"latency budget for {name} is in {lim.unit} but its profile predicts {unit}"
                   + ("" if clock else " and the target has no clock_mhz to convert"))


def _target_map(targets: Mapping[str, Any] | Sequence[Any], dense: DenseContext) -> dict[str, Any]:
    if isinstance(targets, Mapping):
        out = dict(targets)
    else:
        out = {getattr(t, "name", t): (t if not isinstance(t, str) else None) for t in targets}
    for name in dense.predictors:
        out.setdefault(name, None)
    return out


@dataclass(frozen=True)
class Resolved:
    """One metric (for one target) after resolving: its absolute limit (None = unlimited) and dense value."""

    metric: str
    target: str | None
    limit: float | None
    dense: float
    dense_source: str  # "measured", "predicted" or "model"
    budget: str | None = None  # the limit as written (``0.6x``)
    dense_predicted: float | None = None
    ratio: float | None = None  # the limit was this fraction of the dense value
    native_unit: str | None = None  # a predictor's own unit that no metric has (values are in it)

    @property
    def key(self) -> str:
        """The planner's key: ``lat:<target>`` for a time metric, else the metric name."""
        return f"lat:{self.target}" if self.target is not None else self.metric

    @property
    def unit(self) -> str:
        """The unit of ``limit`` and ``dense``."""
        return self.native_unit or get_metric(self.metric).unit

    def describe(self) -> str:
        """``predicted latency on cpu-ort``."""
        return get_metric(self.metric).describe(self.target)

    def format(self, value: float) -> str:
        """A value of this metric for people."""
        if self.native_unit:
            return f"{value:.4g} {self.native_unit}" if math.isfinite(value) else "unreachable"
        return get_metric(self.metric).format_value(value)


@dataclass(frozen=True)
class Limits:
    """Absolute limits and dense values of every metric, resolved once from a :class:`Budget`.

    The planner, the schedule, the pipeline and the report all read this; keys are
    :attr:`Resolved.key` (``lat:<target>``, ``model_bytes``, ``macs``, ``peak_memory``).
    """

    entries: tuple[Resolved, ...]
    granularity: int | None = None
    budget: str = ""

    def __getitem__(self, key: str) -> Resolved:
        for e in self.entries:
            if e.key == key:
                return e
        raise KeyError(key)

    def get(self, key: str) -> Resolved | None:
        """The entry for ``key``, or None."""
        try:
            return self[key]
        except KeyError:
            return None

    def target(self, name: str) -> Resolved | None:
        """The time entry of target ``name``."""
        return self.get(f"lat:{name}")

    @property
    def targets(self) -> list[str]:
        """Target names, in order."""
        return [e.target for e in self.entries if e.target is not None]

    def limited(self) -> dict[str, float]:
        """``{key: absolute limit}`` of every metric that has one (what the solver constrains)."""
        return {e.key: e.limit for e in self.entries if e.limit is not None}

    def with_limit(self, key: str, limit: float | None) -> Limits:
        """A copy with the absolute limit of ``key`` replaced (re-planning against a tighter target)."""
        return replace(self, entries=tuple(replace(e, limit=limit) if e.key == key else e for e in self.entries))

    def rebased(self, key: str, dense: float, source: str = "measured") -> Limits:
        """A copy whose ``key`` has a new dense value (a fresh measurement); a ratio limit follows it."""
        def one(e: Resolved) -> Resolved:
            if e.key != key:
                return e
            return replace(e, dense=float(dense), dense_source=source,
                           limit=e.ratio * float(dense) if e.ratio is not None else e.limit)
        return replace(self, entries=tuple(one(e) for e in self.entries))

    def step(self, t: int, steps: int, decay: str = "geometric") -> Limits:
        """Step ``t`` of ``steps`` from dense to these limits: ``dense * (limit/dense) ** (t/steps)`` or linear."""
        out = []
        for e in self.entries:
            if e.limit is None or e.dense <= 0 or e.limit >= e.dense:
                out.append(e)
                continue
            frac = t / steps
            v = e.dense * (e.limit / e.dense) ** frac if decay == "geometric" else e.dense + (e.limit - e.dense) * frac
            out.append(replace(e, limit=e.limit if t == steps else float(v)))
        return replace(self, entries=tuple(out))
