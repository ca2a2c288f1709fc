"""Channel counts the hardware likes."""
from __future__ import annotations

import math

from edgeprune.errors import BadInput


def round_channels(k: float, multiple: int, total: int, mode: str = "nearest") -> int:
    """Turn "keep ``k`` of ``total`` channels" into a count allowed by the target.

    The result is a multiple of ``multiple`` (at least one block), or ``total``
    itself (a layer may always stay whole, even when ``total`` is unaligned).
    ``mode`` is "nearest", "up" or "down".
    """
    if multiple < 1:
        raise BadInput(f"channel multiple must be >= 1, got {multiple}")
    if total < 1:
        raise BadInput(f"group size must be >= 1, got {total}")
    if k >= total:
        return total
    q = k / multiple
    steps = {"nearest": round(q), "up": math.ceil(q), "down": math.floor(q)}.get(mode)
    if steps is None:
        raise BadInput(f"unknown rounding mode {mode!r}")
    n = max(1, steps) * multiple
    return min(n, total)


def allowed_counts(total: int, multiple: int) -> list[int]:
    """Every count a group of ``total`` channels may keep on this granularity, ascending."""
    counts = set(range(multiple, total, multiple)) | {total}
    if multiple >= total:
        counts = {total}
    return sorted(counts)
