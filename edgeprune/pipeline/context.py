"""The run context: what the stages of one ``compress`` share, and the argument checks made before any work."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeprune.backends.base import Backend, Engine
from edgeprune.budget import ALL, Budget, Limits
from edgeprune.config import Target, get_target
from edgeprune.data import Dataset
from edgeprune.errors import BadInput, first_line
from edgeprune.pipeline.config import CompressConfig
from edgeprune.pipeline.measure import Meter
from edgeprune.pipeline.stages import Clock, Stages
from edgeprune.profile.timing import Timing
from edgeprune.ui import UI

# Limits keys -> the keys of a measured candidate's cost (latency in the backend's unit)
COST_KEYS = {"macs": "macs", "model_bytes": "bytes", "peak_memory": "peak_memory"}


@dataclass
class Inputs:
    """What the user asked for, as given to :func:`edgeprune.pipeline.compress`."""

    model: str | nn.Module
    data: str | Dataset | None
    target: str | Target
    budget: str | Budget
    out: str | Path | None = None
    input_shape: tuple[int, ...] | None = None


@dataclass
class Run:
    """One compression run: its inputs resolved once, and each stage's result as the stages fill it in."""

    model_name: str
    dense: nn.Module
    data: Dataset | None
    example: torch.Tensor
    target: Target
    backend: Backend
    budget: Budget
    config: CompressConfig
    ui: UI
    out: Path
    calib: torch.Tensor | None = None
    clock: Clock = field(default_factory=Clock)
    started: float = field(default_factory=time.perf_counter)
    stages: Stages | None = None
    # filled in by the stages, in order
    dense_latency: float | None = None  # measured, in the backend's unit
    graph: Any = None
    scores: dict[str, torch.Tensor] | None = None
    limits: Limits | None = None
    plan: dict[str, Any] | None = None
    small: nn.Module | None = None
    engine: Engine | None = None
    verify: Any = None
    final: dict[str, Timing] | None = None
    result: Any = None

    @property
    def meter(self) -> Meter:
        """Measures on this run's target through its backend."""
        return Meter(self.target, self.backend, self.example, self.calib, self.config.protocol, self.clock)

    @property
    def margin(self) -> float:
        """Plan to this fraction of a latency limit: the configured margin, 1 on a (deterministic) simulator."""
        return 1.0 if self.backend.simulated else self.config.margin

    @property
    def unit_label(self) -> str:
        """``ms``, or ``cycles (simulated)``."""
        return self.backend.unit + (" (simulated)" if self.backend.simulated else "")

    @property
    def precisions(self) -> dict[str, str]:
        """The plan's precision per layer."""
        return dict((self.plan or {}).get("precisions") or {})

    @property
    def quantize(self) -> bool:
        """Whether the engine gets int8 QDQ layers: the plan has int8 layers and the backend runs QDQ as int8."""
        return self.backend.qdq_int8 and any(p == "int8" for p in self.precisions.values())

    @property
    def int8(self) -> bool:
        """Whether the shipped engine is int8 (QDQ layers, or an int8-only backend)."""
        return self.backend.int8_only or self.quantize

    def dense_signatures(self) -> dict[str, Any]:
        """The dense model's layer signatures at the target's widest precision (int8 on an int8-only accelerator)."""
        from edgeprune.metrics import sort_precisions

        widest = "fp32" if "fp32" in self.target.precisions else sort_precisions(self.target.precisions)[0]
        return self.graph.signatures({}, dict.fromkeys(self.graph.layers, widest))

    def cost_limits(self) -> dict[str, float]:
        """The resolved limits in a measured cost's keys: ``latency`` (backend unit), macs, bytes, peak_memory."""
        assert self.limits is not None
        out = {}
        for key, value in self.limits.limited().items():
            if key == f"lat:{self.target.name}":
                out["latency"] = value
            elif key in COST_KEYS:
                out[COST_KEYS[key]] = value
        return out


def check_inputs(inputs: Inputs, cfg: CompressConfig) -> tuple[Target, Backend, Budget]:
    """Every check that needs no model run: fail on bad arguments before any work (and before ``state/`` exists)."""
    from edgeprune.backends import get_backend
    from edgeprune.importance import CRITERIA, list_criteria

    list_criteria()  # discovery: registers every criterion module (CRITERIA is empty in a fresh process)
    budget = Budget.parse(inputs.budget) if isinstance(inputs.budget, str) else inputs.budget
    if budget.is_empty():
        raise BadInput("empty budget: give at least one limit (e.g. latency=0.6x)")
    tgt = get_target(inputs.target)
    ok, reason = tgt.availability()
    if not ok:
        raise BadInput(f"target {tgt.name} cannot run here: {reason}")
    backend = get_backend(tgt.backend)
    for _, name, _lim in budget.items():
        if name not in (ALL, tgt.name):
            raise BadInput(f"budget names target {name!r} but compress runs on {tgt.name}")
    lat = budget.latency_for(tgt.name)
    if lat is not None and not lat.is_ratio and lat.unit != backend.unit and not tgt.clock_mhz:
        raise BadInput(f"budget latency for {tgt.name} is in {lat.unit} but {tgt.name} is measured in {backend.unit} "
                       "and has no clock_mhz to convert")
    if cfg.planner not in ("auto", "milp", "uniform"):
        raise BadInput(f"unknown planner {cfg.planner!r} (auto, milp, uniform)")
    if inputs.data is None and cfg.plan_file is None and CRITERIA.get(cfg.criterion).needs_data:  # an unknown criterion: one-line error
        free = ", ".join(e.name for e in CRITERIA if not e.obj.needs_data)
        raise BadInput(f"criterion {cfg.criterion} needs data; pass --data or a data-free criterion ({free})")
    if inputs.data is None and cfg.max_drop is not None:
        raise BadInput("--max-drop needs data to measure the accuracy drop: pass --data")
    if cfg.train_device is not None and cfg.epochs > 0:
        from edgeprune.recover.finetune import resolve_device

        resolve_device(cfg.train_device, nn.Module())  # a bad device fails now, not after profiling and planning
    return tgt, backend, budget


def open_run(inputs: Inputs, cfg: CompressConfig, ui: UI) -> Run:
    """Check the arguments, load the model and data, run the model once on the example input."""
    from edgeprune.data import check_labels, load_data
    from edgeprune.graph import example_input
    from edgeprune.models import load_model

    started = time.perf_counter()
    tgt, backend, budget = check_inputs(inputs, cfg)
    torch.manual_seed(cfg.seed)
    model_name = inputs.model if isinstance(inputs.model, str) else type(inputs.model).__name__
    dense = load_model(inputs.model, args=cfg.model_args, weights=cfg.weights).eval()
    ds = load_data(inputs.data) if inputs.data is not None else None
    example = example_input(None, ds, inputs.input_shape)  # no guess: latency depends on the input size
    with torch.no_grad():
        try:
            logits = dense(example)
        except Exception as err:  # noqa: BLE001 - the user's model may raise anything: one-line user-facing error
            raise BadInput(f"the model does not run on input {tuple(example.shape)}: {first_line(err)}") from None
    if ds is not None:
        check_labels(ds, logits.shape[-1])
    run_name = cfg.run_name or f"{Path(str(model_name)).stem}-{tgt.name}"
    out = Path(inputs.out) if inputs.out else Path("build") / run_name
    calib = ds.train.sample(256, cfg.seed) if ds is not None else None
    return Run(str(model_name), dense, ds, example, tgt, backend, budget, cfg, ui, out, calib, started=started)
