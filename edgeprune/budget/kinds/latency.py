"""Latency per target in milliseconds (measured or predicted by the target's profile)."""
from __future__ import annotations

import math
from types import MappingProxyType
from typing import Any

from edgeprune.budget.metric import DenseContext, Metric, register_metric


class Latency(Metric):
    """Wall-clock latency of one inference on a target, in ms."""

    name = "latency"
    aliases = ("lat",)
    unit = "ms"
    units = MappingProxyType({"ms": 1.0, "us": 1e-3, "s": 1e3})
    per_target = True
    time_unit = "ms"
    what = "predicted latency"
    default_unit = "ms"

    def dense(self, ctx: DenseContext, target: str | None = None) -> float:
        """Measured dense latency when given, else the target predictor's model cost."""
        if target in ctx.measured:
            return float(ctx.measured[target])
        return float(ctx.predictors[target].model_cost(ctx.signatures_for(target)))

    def layer_cost(self, sig: Any, predictor: Any = None) -> float:
        """The layer's marginal share of ``predictor.model_cost`` (exact for additive predictors)."""
        return float(predictor.model_cost({"layer": sig})) - float(predictor.model_cost({}))

    def format_value(self, value: float) -> str:
        """``3.1 ms``."""
        return "unreachable" if not math.isfinite(value) else f"{value:.3g} ms"


register_metric(Latency())
