"""Cycles per target: the VTA simulator's cycle count (simulated, not measured on an FPGA)."""
from __future__ import annotations

import math
from types import MappingProxyType

from edgeprune.budget.kinds.latency import Latency
from edgeprune.budget.metric import register_metric


class Cycles(Latency):
    """Accelerator cycles of one inference, from a cycle-level simulation."""

    name = "cycles"
    aliases = ()
    unit = "cycles"
    units = MappingProxyType({"cycles": 1.0, "kcycles": 1e3, "mcycles": 1e6})
    time_unit = "cycles"
    what = "predicted latency"
    default_unit = "cycles"

    def format_value(self, value: float) -> str:
        """``40,000 cycles (simulated)``."""
        return "unreachable" if not math.isfinite(value) else f"{value:,.0f} cycles (simulated)"


register_metric(Cycles())
