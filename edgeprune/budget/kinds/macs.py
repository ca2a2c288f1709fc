"""Multiply-accumulates of one forward pass (conv and linear layers)."""
from __future__ import annotations

from types import MappingProxyType
from typing import Any

from edgeprune.budget.kinds._format import scaled
from edgeprune.budget.metric import DenseContext, Metric, register_metric


class Macs(Metric):
    """MACs, summed over layers (:attr:`LayerSignature.macs`, as :func:`edgeprune.metrics.count_macs`)."""

    name = "macs"
    aliases = ("flops",)
    unit = "count"
    units = MappingProxyType({"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9})
    what = "MACs"
    default_unit = ""

    def dense(self, ctx: DenseContext, target: str | None = None) -> float:
        """Summed over the dense model's layer signatures."""
        return float(sum(self.layer_cost(s) for s in ctx.signatures.values()))

    def layer_cost(self, sig: Any, predictor: Any = None) -> float:
        """The layer's MACs at its kept channels."""
        from edgeprune.metrics import layer_macs

        return layer_macs(sig)

    def format_value(self, value: float) -> str:
        """``12.3M``."""
        return scaled(value, ((1e9, "G"), (1e6, "M"), (1e3, "k")), "")


register_metric(Macs())
