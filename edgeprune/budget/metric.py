"""What a budget metric is, and the one registry of them (``edgeprune/budget/kinds/`` fills it)."""
from __future__ import annotations

import importlib
import math
import pkgutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from edgeprune.errors import BadInput

RATIO_UNITS: dict[str, float] = {"x": 1.0, "%": 0.01}


@dataclass(frozen=True)
class DenseContext:
    """What a metric may read to compute the dense (unpruned) model's value.

    ``signatures``: ``{layer: LayerSignature}`` of the dense model; ``predictors``:
    ``{target: Predictor}``; ``measured``: ``{target: measured dense value}`` in the
    predictor's unit, preferred over the prediction when given.
    """

    model: Any
    signatures: Mapping[str, Any]
    predictors: Mapping[str, Any] = field(default_factory=dict)
    measured: Mapping[str, float] = field(default_factory=dict)
    units: Mapping[str, str] = field(default_factory=dict)  # target -> "ms"/"cycles" where no predictor says
    target_signatures: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # a target's own dense precisions

    def signatures_for(self, target: str | None) -> Mapping[str, Any]:
        """The dense signatures as ``target`` runs them (int8 on an int8-only accelerator), else ``signatures``."""
        return self.target_signatures.get(target, self.signatures) if target is not None else self.signatures


class Metric:
    """One budget metric. Subclasses set the class attributes and override the methods they need.

    - ``name`` / ``aliases``: how ``--budget`` names it (``bytes=2MB``);
    - ``units``: unit text -> scale to ``unit`` (the metric's own unit); ``x`` and ``%`` are always ratios;
    - ``per_target``: one value per target (latency, cycles) or one for the model;
    - ``reduce``: ``"sum"`` over layers or ``"max"`` (peak memory);
    - ``time_unit``: the predictor unit this metric measures (``"ms"``, ``"cycles"``), None if not a time.
    """

    name: str = ""
    aliases: tuple[str, ...] = ()
    unit: str = ""
    units: Mapping[str, float] = MappingProxyType({})
    per_target: bool = False
    reduce: str = "sum"
    time_unit: str | None = None
    what: str = ""
    default_unit: str | None = None  # unit assumed when the number has none

    def dense(self, ctx: DenseContext, target: str | None = None) -> float:
        """The dense model's value (in ``unit``)."""
        raise NotImplementedError

    def layer_cost(self, sig: Any, predictor: Any = None) -> float:
        """A layer's predicted contribution at signature ``sig`` (the planner sums or maxes these)."""
        raise NotImplementedError

    def describe(self, target: str | None = None) -> str:
        """What it is, for messages (``predicted latency on cpu-ort``)."""
        return f"{self.what} on {target}" if target else self.what

    def format_value(self, value: float) -> str:
        """A value for people (``3.1 ms``, ``1.2 MB``)."""
        if not math.isfinite(value):
            return "unreachable"
        return f"{value:.4g} {self.unit}".strip()


METRICS: dict[str, Metric] = {}


def register_metric(metric: Metric) -> Metric:
    """Add a metric to the registry (a module in ``edgeprune/budget/kinds/`` calls this at import)."""
    METRICS[metric.name] = metric
    return metric


def _load() -> None:
    if METRICS:
        return
    from edgeprune.budget import kinds

    for mod in pkgutil.iter_modules(kinds.__path__):
        importlib.import_module(f"{kinds.__name__}.{mod.name}")


def metrics() -> dict[str, Metric]:
    """Every registered metric by name."""
    _load()
    return METRICS


def get_metric(name: str) -> Metric:
    """A metric by its name."""
    _load()
    if name not in METRICS:
        raise BadInput(f"unknown budget metric {name!r} (known: {', '.join(METRICS)})")
    return METRICS[name]


def time_metric(unit: str) -> Metric:
    """The per-target metric whose values are in predictor unit ``unit`` (``ms`` -> latency, ``cycles`` -> cycles).

    Any other unit gets the latency metric, with the values kept in that unit (:attr:`Resolved.native_unit`).
    """
    for m in metrics().values():
        if m.time_unit == unit:
            return m
    return get_metric("latency")  # a predictor in its own unit (e.g. MMAC): ratios work, an absolute limit is refused


def by_key(key: str) -> list[Metric]:
    """Metrics a ``--budget`` key may name (several when the unit decides, e.g. ``latency=`` in ms or cycles)."""
    key = key.lower()
    direct = [m for m in metrics().values() if key == m.name or key in m.aliases]
    return direct
