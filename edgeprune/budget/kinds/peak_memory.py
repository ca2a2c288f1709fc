"""Peak activation memory: the largest layer's input + output activations (a max over layers, not a sum)."""
from __future__ import annotations

from typing import Any

from edgeprune.budget.kinds._format import scaled
from edgeprune.budget.kinds.model_bytes import SIZE_STEPS, SIZE_UNITS
from edgeprune.budget.metric import DenseContext, Metric, register_metric


class PeakMemory(Metric):
    """Bytes of activations live at the busiest layer, batch 1 (:func:`edgeprune.metrics.activation_bytes`)."""

    name = "peak_memory"
    aliases = ("memory", "mem")
    unit = "bytes"
    units = SIZE_UNITS
    reduce = "max"
    what = "peak activation memory"

    def dense(self, ctx: DenseContext, target: str | None = None) -> float:
        """The largest layer's activation bytes."""
        return max((self.layer_cost(s) for s in ctx.signatures.values()), default=0.0)

    def layer_cost(self, sig: Any, predictor: Any = None) -> float:
        """Input + output (+ residual operand) activation bytes at the layer's precision."""
        from edgeprune.metrics import activation_bytes

        return activation_bytes(sig)

    def format_value(self, value: float) -> str:
        """``1.2 MB``."""
        return scaled(value, SIZE_STEPS, "B", " ")


register_metric(PeakMemory())
