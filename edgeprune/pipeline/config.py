"""What ``compress`` takes and returns: :class:`CompressConfig`, :class:`ModelFigures`, :class:`CompressResult`."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from edgeprune.profile.timing import TimingProtocol


@dataclass(frozen=True)
class CompressConfig:
    """Options of one compression run (the CLI flags of ``edgeprune compress``)."""

    criterion: str = "fisher"  # benchmarks/results/planner-weighting-resnet56.md; docs/importance.md
    planner: str = "auto"  # auto (= milp) | milp | uniform
    weighting: str = "importance"  # milp objective: groups weighted by their total importance, or "uniform"
    max_prune: float | None = None  # milp: at most this fraction of any group's channels removed
    epochs: float = 2.0
    kd: bool = True
    lr: float = 0.02
    batch_size: int = 128
    train_device: str | None = None  # torch device for fine-tuning ("cuda"); None: the CPU
    seed: int = 0
    eval_limit: int | None = None
    score_batches: int = 8
    protocol: TimingProtocol = field(default_factory=TimingProtocol)
    final_repeats: int = 3
    max_attempts: int = 4
    time_limit: float = 10.0  # milp: seconds per solve (plan.PlanConfig.time_limit); a plan cut short says so
    margin: float = 0.95  # plan to this fraction of the budget: measured latency is noisy
    precisions: tuple[str, ...] | None = None  # None: every precision the target supports (milp planner only)
    resume: bool = False
    run_name: str | None = None
    profiles: str | None = None  # folder of latency profiles (None: the user cache, then the shipped ones)
    allow_foreign_profile: bool = False  # plan on a profile measured on another device (else re-fit or re-measure here)
    model_args: Mapping[str, Any] = field(default_factory=dict)  # keyword arguments of a factory / hub model (--model-arg)
    weights: str | None = None  # a state_dict file loaded into the model (--weights)
    freeze: tuple[str, ...] = ()  # layer-name (or group-id) globs whose channel groups are never pruned (--freeze)
    max_drop: str | None = None  # accuracy guard: "1pt" (points) or "0.5%" (of the dense figure); exit 1 beyond it
    plan_file: str | None = None  # apply this plan.json instead of searching one (edgeprune apply)
    allow_head_mismatch: bool = False  # go on (with a warning) when the classifier has more outputs than the data has classes

    def __post_init__(self) -> None:
        if self.max_drop is not None:
            parse_max_drop(self.max_drop)  # a bad value fails here, before any work
        if isinstance(self.freeze, str):
            object.__setattr__(self, "freeze", (self.freeze,))


def parse_max_drop(text: str | float) -> tuple[float, bool]:
    """``"1pt"`` / ``"1"`` -> (1.0, False): points of the metric (top-1 %); ``"0.5%"`` -> (0.5, True): percent of the
    dense figure."""
    import re

    from edgeprune.errors import BadInput

    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(pt|pts|points?|%)?\s*", str(text))
    if not m:
        raise BadInput(f"cannot parse --max-drop {text!r} (expected e.g. 1pt, or 0.5% of the dense accuracy)")
    return float(m.group(1)), m.group(2) == "%"


@dataclass
class ModelFigures:
    """Figures of one model in the final table (latency in ``latency_unit``: ms, or simulated cycles).

    ``top1`` is None when not measured (no data, or a user ``eval_fn`` in its place); ``metric`` is the
    quality figure the run reports, named ``metric_name`` (``top1``, or the ``eval_fn``'s name).
    """

    top1: float | None
    params: int
    macs: int
    bytes: int
    latency_ms: float  # the value in ``latency_unit`` (the key keeps its name for existing reports)
    latency_p10_ms: float
    latency_p90_ms: float
    latency_unit: str = "ms"
    simulated: bool = False
    metric: float | None = None
    metric_name: str = "top1"

    @property
    def latency_label(self) -> str:
        """``ms``, or ``cycles (simulated)``."""
        return self.latency_unit + (" (simulated)" if self.simulated else "")


@dataclass
class CompressResult:
    """What ``compress`` returns (and writes as report.json)."""

    model: nn.Module
    dense: ModelFigures
    compressed: ModelFigures
    speedup: float
    budget: str
    budget_met: bool
    budget_detail: list[str]
    out_dir: Path
    plan: dict[str, Any]
    verify: dict[str, Any]
    report: dict[str, Any]

    @property
    def top1_drop(self) -> float | None:
        """Dense minus compressed top-1, in points (None: not measured)."""
        if self.dense.top1 is None or self.compressed.top1 is None:
            return None
        return self.dense.top1 - self.compressed.top1

    def table_rows(self) -> list[tuple]:
        """Rows of the summary table (a quality figure that was not measured reads "not measured")."""
        d, c = self.dense, self.compressed
        if d.metric is None or c.metric is None:
            quality = ("top-1 (%)" if d.metric_name == "top1" else d.metric_name, "not measured", "not measured", "")
        elif d.metric_name == "top1":
            quality = ("top-1 (%)", d.metric, c.metric, f"{c.metric - d.metric:+.2f} pt")
        else:
            quality = (d.metric_name, d.metric, c.metric, f"{c.metric - d.metric:+.4g}")
        return [
            quality,
            ("params", d.params, c.params, f"{c.params / max(d.params, 1):.2f}x"),
            ("MACs", d.macs, c.macs, f"{c.macs / max(d.macs, 1):.2f}x"),
            (f"latency median ({d.latency_label})", d.latency_ms, c.latency_ms, f"{self.speedup:.2f}x faster"),
        ]
