"""Seeds in the headline benchmark (issue 25): a row's top-1 over several fine-tuning seeds, and the verdict
"ahead" only beyond the seeds' spread."""
from __future__ import annotations

import math
from collections.abc import Sequence


def seed_summary(top1s: Sequence[float]) -> dict[str, float | int]:
    """``{"seeds", "top1" (mean), "top1_std"}`` of one row's top-1 over its seeds (sample std, ddof 1; 0 for one seed)."""
    vals = [float(v) for v in top1s]
    if not vals:
        raise ValueError("no seeds")
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return {"seeds": len(vals), "top1": round(mean, 3), "top1_std": round(std, 3)}


def verdict(a: dict, b: dict) -> str:
    """One sentence comparing row ``a`` (edgeprune) with row ``b`` (the best peer), from their top-1 (mean) and std.

    "ahead" / "behind" only when the mean difference exceeds the sum of the two stds and both have at least
    two seeds; otherwise "within the spread" (one seed has no spread to go beyond).
    """
    diff = a["top1"] - b["top1"]
    sa, sb = a.get("top1_std", 0.0), b.get("top1_std", 0.0)
    na, nb = a.get("seeds", 1), b.get("seeds", 1)
    spread = sa + sb
    tail = f"{diff:+.2f} pt (mean over {na} vs {nb} seed(s); std {sa:.2f} and {sb:.2f}, spread {spread:.2f} pt)"
    if na < 2 or nb < 2:
        return f"{a['method']} vs {b['method']}: {tail}: not claimed ahead or behind (a single seed has no spread)"
    if abs(diff) > spread:
        return f"{a['method']} is {'ahead of' if diff > 0 else 'behind'} {b['method']} beyond the seeds' spread: {tail}"
    return f"{a['method']} vs {b['method']}: within the spread: {tail}"
