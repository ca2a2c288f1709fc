"""Shared number formatting for the metric modules."""
from __future__ import annotations

import math


def scaled(value: float, steps: tuple[tuple[float, str], ...], last: str, sep: str = "") -> str:
    """``value`` with the largest suffix from ``steps`` it reaches (``12.3M``), else ``value`` + ``last``."""
    if not math.isfinite(value):
        return "unreachable"
    for div, suf in steps:
        if value >= div:
            return f"{value / div:.3g}{sep}{suf}"
    return f"{value:.0f}{sep}{last}".rstrip()
