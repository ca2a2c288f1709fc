"""``PlanConfig``: the planner's knobs, so :func:`edgeprune.plan.plan` takes a handful of arguments."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from edgeprune.errors import BadInput

WEIGHTINGS = ("importance", "uniform")


@dataclass(frozen=True)
class PlanConfig:
    """How the planner searches (docs/plan.md).

    - ``granularity``: kept counts are multiples of this (None: the budget's ``granularity=``,
      else the least common multiple of the targets' ``channel_multiple``);
    - ``precisions``: precisions to offer (None: each target's own); each target picks from
      the ones it runs;
    - ``time_limit``: solver seconds;
    - ``sensitivity``: ``{layer: {precision: cost}}`` replacing the default bit-width cost,
      scaled by ``quant_weight``;
    - ``weighting``: ``"importance"`` or ``"uniform"``; ``group_weights`` given explicitly replace it;
    - ``max_prune``: at most this fraction of any group removed (None: no floor);
    - ``freeze``: layer-name globs whose in and out channels stay whole;
    - ``model_name``: recorded in the plan.
    """

    granularity: int | None = None
    precisions: Sequence[str] | None = None
    time_limit: float = 10.0
    sensitivity: Mapping[str, Mapping[str, float]] | None = None
    quant_weight: float = 1.0
    group_weights: Mapping[str, float] | None = None
    weighting: str = "importance"
    max_prune: float | None = None
    freeze: Sequence[str] = field(default_factory=tuple)
    model_name: str = ""

    def __post_init__(self) -> None:
        if self.weighting not in WEIGHTINGS:
            raise BadInput(f"unknown weighting {self.weighting!r} (choose from {', '.join(WEIGHTINGS)})")
        if self.max_prune is not None and not 0.0 <= self.max_prune < 1.0:
            raise BadInput(f"max_prune must be in [0, 1), got {self.max_prune}")
        if self.granularity is not None and int(self.granularity) < 1:
            raise BadInput(f"granularity must be >= 1, got {self.granularity}")
        if not self.time_limit > 0:
            raise BadInput(f"time_limit must be positive, got {self.time_limit}")
