"""Stored model size in bytes (weights at their precision, every other parameter at 32 bits)."""
from __future__ import annotations

from types import MappingProxyType
from typing import Any

from edgeprune.budget.kinds._format import scaled
from edgeprune.budget.metric import DenseContext, Metric, register_metric

SIZE_UNITS = MappingProxyType({"b": 1.0, "kb": 1e3, "mb": 1e6, "gb": 1e9, "kib": 1024.0, "mib": 1024.0**2, "gib": 1024.0**3})
SIZE_STEPS = ((1e9, "GB"), (1e6, "MB"), (1e3, "kB"))


class ModelBytes(Metric):
    """Bytes of stored parameters (:func:`edgeprune.metrics.model_bytes`)."""

    name = "model_bytes"
    aliases = ("bytes", "size")
    unit = "bytes"
    units = SIZE_UNITS
    what = "model size"

    def dense(self, ctx: DenseContext, target: str | None = None) -> float:
        """All parameters at 32 bits."""
        from edgeprune.metrics import model_bytes

        return float(model_bytes(ctx.model))

    def layer_cost(self, sig: Any, predictor: Any = None) -> float:
        """The layer's weight tensor at its precision (biases and norms ride on the groups, plan/costs.py)."""
        from edgeprune.metrics import weight_bytes

        return weight_bytes(sig)

    def format_value(self, value: float) -> str:
        """``1.2 MB``."""
        return scaled(value, SIZE_STEPS, "B", " ")


register_metric(ModelBytes())
