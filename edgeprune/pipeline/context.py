"""The run context: what the stages of one ``compress`` share, and the argument checks made before any work."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeprune.backends.base import Backend, Engine
from edgeprune.budget import ALL, Budget, Limits
from edgeprune.config import Target, get_target
from edgeprune.data.source import DataSource
from edgeprune.errors import BadInput, first_line
from edgeprune.pipeline.config import CompressConfig
from edgeprune.pipeline.distributed import Ranks
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
    data: Any  # anything edgeprune.data.as_source takes, or None
    target: str | Target
    budget: str | Budget
    out: str | Path | None = None
    input_shape: tuple[int, ...] | None = None
    example_inputs: Any = None  # a tensor, a tuple (positional) or a dict (keyword inputs); batch 1 is used
    loss_fn: Callable[[Any, Any], torch.Tensor] | None = None  # (outputs, targets) -> scalar, instead of cross-entropy
    eval_fn: Callable[[Any, Any], float] | None = None  # (model, val_batches) -> float, higher is better, instead of top-1


@dataclass
class Run:
    """One compression run: its inputs resolved once, and each stage's result as the stages fill it in."""

    model_name: str
    dense: nn.Module
    data: DataSource | None
    example: Any  # a tensor, or a tuple/dict of tensors for a multi-input model (batch 1)
    target: Target
    backend: Backend
    budget: Budget
    config: CompressConfig
    ui: UI
    out: Path
    calib: Any = None  # int8 calibration inputs (same structure as ``example``)
    loss_fn: Callable[[Any, Any], torch.Tensor] | None = None
    eval_fn: Callable[[Any, Any], float] | None = None
    clock: Clock = field(default_factory=Clock)
    started: float = field(default_factory=time.perf_counter)
    stages: Stages | None = None
    ranks: Ranks = field(default_factory=Ranks)  # under torchrun: this process's rank (only rank 0 measures and writes)
    # filled in by the stages, in order
    estimated_s: float | None = None  # the wall time the run announced (pipeline.run.estimate_seconds)
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
    def metric(self) -> str:
        """The name the quality figure is reported under: ``top1``, or the user's ``eval_fn`` name."""
        from edgeprune.metrics import metric_name

        return metric_name(self.eval_fn)

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
        from edgeprune.profile.lut import dense_signatures

        return dense_signatures(self.graph, self.target)

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

    list_criteria()  # discover the criteria: a registry checked before discovery knows none
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
    crit = CRITERIA.get(cfg.criterion)  # an unknown criterion: one-line error
    if inputs.data is None and cfg.plan_file is None and crit.needs_data:
        free = ", ".join(e.name for e in CRITERIA if not e.obj.needs_data)
        raise BadInput(f"criterion {cfg.criterion} needs data; pass --data or a data-free criterion ({free})")
    if inputs.data is None and cfg.max_drop is not None:
        raise BadInput("--max-drop needs data to measure the accuracy drop: pass --data")
    _check_callables(inputs, cfg)
    if inputs.example_inputs is not None:
        _check_example(inputs.example_inputs)
        if inputs.input_shape is not None:
            raise BadInput("give example_inputs or input_shape, not both")
    if inputs.input_shape is not None and (not inputs.input_shape or any(int(d) < 1 for d in inputs.input_shape)):
        raise BadInput(f"input shape must be positive integers, got {tuple(inputs.input_shape)}")
    if cfg.train_device is not None and cfg.epochs > 0:
        from edgeprune.recover.finetune import resolve_device

        resolve_device(cfg.train_device, nn.Module())  # a bad device fails now, not after profiling and planning
    return tgt, backend, budget


def _check_callables(inputs: Inputs, cfg: CompressConfig) -> None:
    """loss_fn / eval_fn: callables, with data, and with a criterion that honours a custom loss."""
    for what, fn in (("loss_fn", inputs.loss_fn), ("eval_fn", inputs.eval_fn)):
        if fn is not None and not callable(fn):
            raise BadInput(f"{what} must be callable, got {type(fn).__name__}")
    if inputs.eval_fn is not None and inputs.data is None:
        raise BadInput("eval_fn needs data to evaluate on")
    if inputs.loss_fn is not None and cfg.criterion == "taylor-logit":
        raise BadInput("criterion taylor-logit scores cross-entropy on logits and ignores loss_fn; "
                       "use fisher or taylor with a custom loss")


def _check_example(example: Any) -> None:
    """example_inputs: a tensor, or a non-empty tuple/dict of tensors, each with a batch dimension."""
    parts = (list(example.values()) if isinstance(example, dict) else list(example)
             if isinstance(example, (tuple, list)) else [example])
    if not parts or not all(isinstance(t, torch.Tensor) and t.dim() >= 1 and len(t) for t in parts):
        raise BadInput("example_inputs must be a tensor, or a tuple or dict of tensors with a batch dimension, "
                       f"got {type(example).__name__}")


def check_head(source: DataSource, outputs: Any, cfg: CompressConfig, ui: UI, custom_loss: bool) -> None:
    """Labels must fit the classifier; a classifier larger than the data's classes is refused unless
    ``cfg.allow_head_mismatch`` (then a warning). Only for classification (no ``loss_fn``, logits out)."""
    if custom_loss or not isinstance(outputs, torch.Tensor) or outputs.dim() != 2:
        return
    n_out = int(outputs.shape[-1])
    top = source.max_label()
    if top is not None and top >= n_out:
        raise BadInput(f"data {source.name}: label {top} out of range for a model with {n_out} outputs")
    classes = source.num_classes()
    if classes is not None and classes < n_out:
        msg = (f"the model has {n_out} outputs but the data {source.name} has {classes} classes: "
               f"{n_out - classes} outputs are never trained or scored")
        if not cfg.allow_head_mismatch:
            raise BadInput(f"{msg}; replace the classifier head, or pass --allow-head-mismatch "
                           "(CompressConfig.allow_head_mismatch) to go on")
        ui.log(f"[yellow]warning: {msg} (allowed by --allow-head-mismatch)[/yellow]")
    elif classes is None and top is not None and top + 1 < n_out:
        ui.log(f"[yellow]warning: the data's labels seen so far go up to {top}, but the model has {n_out} outputs; "
               "is the classifier head the right size?[/yellow]")


def open_run(inputs: Inputs, cfg: CompressConfig, ui: UI) -> Run:
    """Check the arguments, load the model and data, run the model once on the example input."""
    from edgeprune.data.batch import call_model, shapes_of, take
    from edgeprune.data.source import as_source
    from edgeprune.graph import example_input
    from edgeprune.models import load_model

    started = time.perf_counter()
    tgt, backend, budget = check_inputs(inputs, cfg)
    torch.manual_seed(cfg.seed)
    model_name = inputs.model if isinstance(inputs.model, str) else type(inputs.model).__name__
    dense = load_model(inputs.model, args=cfg.model_args, weights=cfg.weights).eval()
    source = as_source(inputs.data)
    if inputs.example_inputs is not None:
        example = take(inputs.example_inputs, 1)
    else:  # no guess: latency depends on the input size
        example = example_input(None, source, inputs.input_shape)
    with torch.no_grad():
        try:
            outputs = call_model(dense, example)
        except Exception as err:  # noqa: BLE001 - the user's model may raise anything: one-line user-facing error
            raise BadInput(f"the model does not run on input {shapes_of(example)}: {first_line(err)}") from None
    if source is not None:
        check_head(source, outputs, cfg, ui, inputs.loss_fn is not None)
    run_name = cfg.run_name or f"{Path(str(model_name)).stem}-{tgt.name}"
    out = Path(inputs.out) if inputs.out else Path("build") / run_name
    calib = source.calibration(256, cfg.seed) if source is not None else None
    return Run(str(model_name), dense, source, example, tgt, backend, budget, cfg, ui, out, calib,
               loss_fn=inputs.loss_fn, eval_fn=inputs.eval_fn, started=started)
