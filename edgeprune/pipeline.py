"""``compress``: every step from a trained model to a verified engine that meets a measured budget.

measure dense -> channel groups -> importance -> plan -> prune -> fine-tune
-> compile -> verify -> measure both (interleaved) -> report. Each stage
checkpoints into ``<out>/state/`` so ``resume=True`` continues after a crash.
"""
from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeprune.budget import DenseContext, Limits
from edgeprune.config import Budget, Target, get_target
from edgeprune.data import Dataset, check_labels, load_data
from edgeprune.environment import machine_info, versions
from edgeprune.errors import BadInput, BudgetMissed, first_line
from edgeprune.fileio import atomic_path, read_json, write_json
from edgeprune.graph import ChannelGraph, channel_groups, example_input
from edgeprune.metrics import count_macs, count_params, evaluate, model_bytes
from edgeprune.models import load_model
from edgeprune.profile.timing import Timing, TimingProtocol
from edgeprune.prune import prune
from edgeprune.prune.granularity import round_channels
from edgeprune.ui import QUIET, UI


@dataclass(frozen=True)
class CompressConfig:
    """Options of one compression run (the CLI flags of ``edgeprune compress``)."""

    criterion: str = "fisher"  # benchmarks/results/planner-weighting-resnet56.md; docs/importance.md
    planner: str = "auto"  # auto | milp | uniform
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
    margin: float = 0.95  # plan to this fraction of the budget: measured latency is noisy
    precisions: tuple[str, ...] | None = None  # None: every precision the target supports (milp planner only)
    resume: bool = False
    run_name: str | None = None
    profiles: str | None = None  # folder of latency profiles (None: the user cache, then the shipped ones)


@dataclass
class ModelFigures:
    """Figures of one model in the final table."""

    top1: float
    params: int
    macs: int
    bytes: int
    latency_ms: float
    latency_p10_ms: float
    latency_p90_ms: float


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
    def top1_drop(self) -> float:
        """Dense minus compressed top-1, in points."""
        return self.dense.top1 - self.compressed.top1

    def table_rows(self) -> list[tuple]:
        """Rows of the summary table."""
        d, c = self.dense, self.compressed
        return [
            ("top-1 (%)", d.top1, c.top1, f"{c.top1 - d.top1:+.2f} pt"),
            ("params", d.params, c.params, f"{c.params / max(d.params, 1):.2f}x"),
            ("MACs", d.macs, c.macs, f"{c.macs / max(d.macs, 1):.2f}x"),
            ("latency median (ms)", d.latency_ms, c.latency_ms, f"{self.speedup:.2f}x faster"),
        ]


def _estimate_seconds(cfg: CompressConfig, ds: Dataset | None) -> float:
    """A rough wall-time estimate on an idle 2-core machine, from the measured parts of a ResNet-20 run."""
    per_measure = min(cfg.protocol.max_seconds, 3.0) + 1.0  # export + one timing protocol
    searches = 9 if cfg.planner == "uniform" else 2
    train = cfg.epochs * len(ds.train) / 300 if ds is not None else 0.0  # ~300 img/s for a pruned ResNet-20
    final = 2 * cfg.final_repeats * per_measure
    return 15 + per_measure * (1 + searches) + train + final + 15


def engine_onnx(model: nn.Module, example: torch.Tensor, target: Target, precisions: dict[str, str] | None,
                calib: Any, directory: Path, name: str = "model") -> tuple[Path, list[str]]:
    """Export ``model``; when some layers are int8, quantise to QDQ keeping the others fp32.

    Returns the engine path and the ORT optimisers its session must disable.
    """
    from edgeprune.compile.onnx_export import export_onnx

    fp32 = export_onnx(model, example, directory / f"{name}.onnx")
    int8 = [n for n, p in (precisions or {}).items() if p == "int8"]
    if not int8:
        return fp32, []
    from edgeprune.quant.ort_int8 import quantize_onnx

    keep_fp32 = [n for n, p in precisions.items() if p != "int8"]  # type: ignore[union-attr]
    q = quantize_onnx(fp32, directory / f"{name}.int8.onnx", target, calib=calib, exclude=keep_fp32)
    return q.path, q.disabled_optimizers


def time_engine(path: Path, target: Target, protocol: TimingProtocol, disabled: list[str] | None = None) -> Timing:
    """Time an engine file on ``target`` (ORT sessions honour the disabled optimisers)."""
    from edgeprune.backends import get_backend

    return get_backend(target.backend).time_onnx(path, target, protocol, disabled or ())


def _runners(engines: dict[str, tuple[Path, list[str]]], target: Target) -> dict[str, Any] | None:
    """In-process runners of engine files (name -> (file, optimisers to disable)); None when the backend has none."""
    from edgeprune.backends import get_backend

    backend = get_backend(target.backend)
    try:
        return {n: backend.make_runner(p, target, dis) for n, (p, dis) in engines.items()}
    except NotImplementedError:
        return None


def _measure_dense(model: nn.Module, example: torch.Tensor, target: Target, protocol: TimingProtocol) -> Timing:
    with tempfile.TemporaryDirectory() as d:
        path, _ = engine_onnx(model, example, target, None, None, Path(d))
        return time_engine(path, target, protocol)


def _keep_from_counts(graph: ChannelGraph, scores: dict[str, torch.Tensor], counts: dict[str, int]) -> dict[str, list[int]]:
    keep = {}
    for g in graph.prunable:
        k = counts.get(g.id, g.size)
        if k < g.size:
            idx = torch.argsort(scores[g.id], descending=True, stable=True)[:k]
            keep[g.id] = sorted(int(i) for i in idx)
    return keep


class _Stages:
    """Checkpoint files of a run: each stage's result, loaded again under ``resume``."""

    def __init__(self, out: Path, resume: bool) -> None:
        self.dir = out / "state"
        self.resume = resume
        self.dir.mkdir(parents=True, exist_ok=True)

    def json(self, name: str, compute: Callable[[], Any]) -> Any:
        path = self.dir / f"{name}.json"
        if self.resume and path.exists():
            return read_json(path, f"checkpoint {name}")
        value = compute()
        write_json(path, value)
        return value

    def tensors(self, name: str, compute: Callable[[], Any]) -> Any:
        path = self.dir / f"{name}.pt"
        if self.resume and path.exists():
            return torch.load(path, map_location="cpu", weights_only=True)
        value = compute()
        with atomic_path(path) as tmp:
            torch.save(value, tmp)
        return value


def compress(model: str | nn.Module = "resnet20-cifar10", data: str | Dataset | None = "cifar10-demo",
             target: str | Target = "cpu-ort", budget: str | Budget = "latency=0.6x", out: str | Path | None = None,
             config: CompressConfig | None = None, input_shape: tuple[int, ...] | None = None, ui: UI = QUIET) -> CompressResult:
    """Compress ``model`` for ``target`` under ``budget``; write the engine and reports to ``out``.

    Raises :class:`~edgeprune.errors.BudgetMissed` (exit code 1) when the
    measured result misses the budget; the files are still written.
    """
    cfg = config or CompressConfig()
    t_start = time.perf_counter()
    model_name = model if isinstance(model, str) else type(model).__name__
    budget = Budget.parse(budget) if isinstance(budget, str) else budget
    if budget.is_empty():
        raise BadInput("empty budget: give at least one limit (e.g. latency=0.6x)")
    tgt = get_target(target)
    ok, reason = tgt.availability()
    if not ok:
        raise BadInput(f"target {tgt.name} cannot run here: {reason}")
    if cfg.train_device is not None and cfg.epochs > 0:
        from edgeprune.recover.finetune import resolve_device

        resolve_device(cfg.train_device, nn.Module())  # a bad device fails now, not after profiling and planning
    torch.manual_seed(cfg.seed)
    dense = load_model(model).eval()
    ds = load_data(data) if data is not None else None
    example = example_input(None, ds, input_shape)  # no guess: latency depends on the input size
    with torch.no_grad():
        try:
            logits = dense(example)
        except Exception as err:  # noqa: BLE001 - the user's model may raise anything: one-line user-facing error
            raise BadInput(f"the model does not run on input {tuple(example.shape)}: {first_line(err)}") from None
    if ds is not None:
        check_labels(ds, logits.shape[-1])
    run_name = cfg.run_name or f"{Path(str(model_name)).stem}-{tgt.name}"
    out_dir = Path(out) if out else Path("build") / run_name
    stages = _Stages(out_dir, cfg.resume)
    ui.log(f"[bold]edgeprune compress[/bold]: {model_name} on {tgt.name} ({tgt.device}), budget {budget}")
    ui.log(f"  steps: measure dense, score channels ({cfg.criterion}), plan ({cfg.planner}), prune, "
           f"fine-tune {cfg.epochs:g} epoch(s){' with KD' if cfg.kd else ''}, compile, verify, measure; out: {out_dir}")
    est = _estimate_seconds(cfg, ds)
    ui.log(f"  estimated time: about {est / 60:.0f}-{2 * est / 60:.0f} min on 2 cores (more on a busy machine)")

    # 1. dense latency (measured) and figures
    ui.log("measuring the dense model ...")
    dense_t = stages.json("dense", lambda: _measure_dense(dense, example, tgt, cfg.protocol).to_dict())
    dense_ms = dense_t["median"]
    ui.log(f"  dense median latency {dense_ms:.3f} ms")

    # 2. groups + importance
    graph = channel_groups(dense, example)
    if not graph.prunable:
        raise BadInput(f"model {model_name} has no prunable channel groups")
    if ds is None and cfg.criterion not in ("l1", "l2", "bn-scale", "bn-stats", "random"):
        raise BadInput(f"criterion {cfg.criterion} needs data; pass --data or a data-free criterion (l1, bn-scale)")

    def score() -> dict[str, torch.Tensor]:
        from edgeprune.importance import importance

        ui.log(f"scoring channels ({cfg.criterion}) ...")
        return importance(dense, ds, cfg.criterion, graph=graph, batches=cfg.score_batches, seed=cfg.seed)

    scores = stages.tensors("scores", score)

    # 3. plan against measured latency, re-planning when a measurement misses
    resolved = _absolute_limits(budget, tgt, dense_ms, dense, graph)
    limits = _limit_dict(resolved, tgt)
    calib = ds.train.sample(256, cfg.seed).numpy() if ds is not None else None
    plan_doc = stages.json("plan", lambda: _plan(dense, graph, scores, resolved, limits, tgt, example, cfg, ui, model_name,
                                                 dense_ms, calib))
    precisions = {k: v for k, v in (plan_doc.get("precisions") or {}).items()}
    int8 = any(p == "int8" for p in precisions.values())
    keep = {k: v for k, v in plan_doc["keep"].items()}

    # 4. prune for real
    small = prune(dense, keep, example)

    # 5. recover
    if ds is not None and cfg.epochs > 0:
        def finetune() -> dict[str, torch.Tensor]:
            from edgeprune.recover import RecoverConfig, recover

            ui.log(f"fine-tuning {cfg.epochs:g} epoch(s) on {len(ds.train)} images{' with KD from the dense model' if cfg.kd else ''} ...")
            rc = RecoverConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed,
                               checkpoint_dir=str(stages.dir), device=cfg.train_device)
            recover(small, ds, teacher=dense if cfg.kd else None, config=rc, ui=ui)
            return small.state_dict()

        small.load_state_dict(stages.tensors("finetuned", finetune))
    small.eval()

    # 6. compile + verify
    from edgeprune.compile import compile as emit
    from edgeprune.verify import verify

    options: dict[str, Any] = {}
    if int8:
        options["quantize"] = {"calib": calib, "exclude": [n for n, p in precisions.items() if p != "int8"]}
        ui.log(f"quantising {sum(p == 'int8' for p in precisions.values())} of {len(precisions)} layers to int8 "
               "(post-training, calibrated on 256 training images) ...")
    engine = emit(small, tgt, out_dir, example, **options)
    # int8 post-training quantisation legitimately flips a few borderline predictions
    vrep = verify(engine, small, ds.test if ds is not None else _RandomImages(example), limit=500,
                  min_agreement=95.0 if int8 else 99.0)
    with atomic_path(out_dir / "model.pt") as tmp:
        torch.save(small, tmp)

    # 7. final measurement: dense and compressed interleaved, median of medians
    ui.log(f"measuring dense and compressed engines ({cfg.final_repeats} interleaved repeats) ...")
    final = _measure_pair(dense, engine, example, tgt, cfg)
    d_t, c_t = final["dense"], final["compressed"]
    dense_fig = _figures(dense, ds, example, d_t, cfg)
    comp_fig = _figures(small, ds, example, c_t, cfg, engine=engine if int8 else None,
                        bits={n: 8 for n, p in precisions.items() if p == "int8"})
    speedup = d_t.median / max(c_t.median, 1e-12)
    met, detail = _check_budget(resolved, tgt, d_t.median, c_t.median, dense_fig, comp_fig)
    report = {
        "schema": 1,
        "model": model_name,
        "target": tgt.name,
        "budget": str(budget),
        "budget_met": met,
        "budget_detail": detail,
        "dense": asdict(dense_fig),
        "compressed": asdict(comp_fig),
        "speedup": speedup,
        "top1_drop": dense_fig.top1 - comp_fig.top1,
        "compressed_top1_from": "int8 engine (ONNX Runtime)" if int8 else "pruned PyTorch model (fp32 engine verified equal)",
        "precisions": precisions,
        "plan": {k: v for k, v in plan_doc.items() if k != "keep"},
        "candidates": _candidates(plan_doc, d_t.median, c_t.median, dense_fig.top1, comp_fig.top1),
        "verify": vrep.to_dict(),
        "config": {k: (asdict(v) if hasattr(v, "__dataclass_fields__") else v) for k, v in asdict(cfg).items()},
        "data": ds.name if ds is not None else None,
        "eval_images": len(ds.test) if ds is not None and cfg.eval_limit is None else cfg.eval_limit,
        "machine": machine_info(),
        "versions": versions(),
        "wall_s": time.perf_counter() - t_start,
    }
    write_json(out_dir / "plan.json", plan_doc)
    write_json(out_dir / "report.json", report)
    try:
        from edgeprune.report import write_report

        write_report(out_dir)
    except ImportError:
        pass
    result = CompressResult(small, dense_fig, comp_fig, speedup, str(budget), met, detail, out_dir, plan_doc, vrep.to_dict(), report)
    if not vrep.passed:
        from edgeprune.errors import VerificationFailed

        err = VerificationFailed(f"engine disagrees with PyTorch: top-1 agreement {vrep.top1_agreement:.1f}% on {vrep.images} images")
        err.result = result  # type: ignore[attr-defined]
        raise err
    if not met:
        err = BudgetMissed("budget missed: " + "; ".join(d for d in detail if "MISSED" in d))
        err.result = result  # type: ignore[attr-defined]
        raise err
    return result


def _candidates(plan_doc: dict[str, Any], dense_ms: float, comp_ms: float, dense_top1: float, comp_top1: float) -> list[dict[str, Any]]:
    """Every model the run measured: dense, each planner candidate (accuracy not evaluated), the final one."""
    out = [{"label": "dense", "latency_ms": dense_ms, "top1": dense_top1}]
    for i, c in enumerate(plan_doc.get("candidates", []) + plan_doc.get("attempts", [])):
        ms = c.get("latency_ms", c.get("measured_ms"))
        if ms is not None:
            out.append({"label": c.get("label", f"candidate {i + 1}"), "latency_ms": ms, "top1": None})
    out.append({"label": "compressed (fine-tuned)", "latency_ms": comp_ms, "top1": comp_top1})
    return out


class _RandomImages:
    """Seeded random inputs with dummy labels: what ``verify`` compares engines on when no data is given."""

    def __init__(self, example: torch.Tensor) -> None:
        self.shape = tuple(example.shape[1:])

    def batches(self, batch_size: int = 256, limit: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``limit`` (default 100) random inputs in batches, the same on every call."""
        g = torch.Generator().manual_seed(0)
        n = limit or 100
        for i in range(0, n, batch_size):
            x = torch.randn(min(batch_size, n - i), *self.shape, generator=g)
            yield x, torch.zeros(len(x), dtype=torch.long)


def _absolute_limits(budget: Budget, tgt: Target, dense_ms: float, dense: nn.Module, graph: ChannelGraph) -> Limits:
    """The budget resolved once, latency against this run's measured dense latency (ms)."""
    lat = budget.latency_for(tgt.name)
    if lat is not None and lat.unit == "cycles":
        raise BadInput(f"budget latency for {tgt.name} is in cycles, but {tgt.name} is measured in ms")
    if budget.peak_memory is not None:
        raise BadInput("peak-memory budgets need the planner (edgeprune plan); compress does not support them yet")
    ctx = DenseContext(dense, graph.signatures(), measured={tgt.name: dense_ms}, units={tgt.name: "ms"})
    return budget.resolve(ctx, {tgt.name: tgt})


def _limit_dict(resolved: Limits, tgt: Target) -> dict[str, float]:
    """The measured search's view of the limits: latency_ms / macs / bytes."""
    names = {f"lat:{tgt.name}": "latency_ms", "macs": "macs", "model_bytes": "bytes"}
    return {names[k]: v for k, v in resolved.limited().items() if k in names}


def _plan(dense: nn.Module, graph: ChannelGraph, scores: dict[str, torch.Tensor], resolved: Limits, limits: dict[str, float],
          tgt: Target, example: torch.Tensor, cfg: CompressConfig, ui: UI, model_name: str, dense_ms: float,
          calib: Any = None) -> dict[str, Any]:
    planner = cfg.planner
    if planner == "auto":
        planner = "milp" if _milp_available() else "uniform"
    if planner == "milp":
        return _plan_milp(dense, graph, scores, resolved, limits, tgt, example, cfg, ui, model_name, dense_ms, calib)
    if planner == "uniform":
        return _plan_uniform(dense, graph, scores, limits, tgt, example, cfg, ui)
    raise BadInput(f"unknown planner {planner!r} (auto, milp, uniform)")


def _milp_available() -> bool:
    try:
        from edgeprune.plan import plan  # noqa: F401
        from edgeprune.profile import load_profile  # noqa: F401
    except ImportError:
        return False
    return True


def _candidate_cost(dense: nn.Module, keep: dict[str, list[int]], example: torch.Tensor, tgt: Target, cfg: CompressConfig,
                    precisions: dict[str, str] | None = None, calib: Any = None,
                    reference: tuple[Path, float] | None = None) -> tuple[dict[str, float], nn.Module]:
    """Measured latency, MACs and bytes of one candidate.

    With ``reference`` (the dense model's engine file and the run's first dense
    measurement), the candidate is timed interleaved with the dense model and
    rescaled to that reference, so a burst of load on a shared machine moves both
    and cancels out.
    """
    small = prune(dense, keep, example)
    with tempfile.TemporaryDirectory() as d:
        path, disabled = engine_onnx(small, example, tgt, precisions, calib, Path(d))
        runners = _runners({"dense": (reference[0], []), "cand": (path, disabled)}, tgt) if reference is not None else None
        if runners is not None:
            from edgeprune.profile.timing import interleaved

            t = interleaved(runners, cfg.protocol, 2)
            latency = t["cand"].median * reference[1] / max(t["dense"].median, 1e-12)
        else:
            latency = time_engine(path, tgt, cfg.protocol, disabled).median
    bits = {n: 8 for n, p in (precisions or {}).items() if p == "int8"}
    return {"latency_ms": latency, "macs": count_macs(small, example), "bytes": model_bytes(small, bits)}, small


_UNITS = {"latency_ms": "ms", "macs": "MACs", "bytes": "B"}


def _shortfall(cost: dict[str, float], limits: dict[str, float]) -> str:
    return "; ".join(f"needs at least {cost[k]:,.4g} {_UNITS[k]}, budget is {v:,.4g} {_UNITS[k]}"
                     for k, v in limits.items() if cost[k] > v)


def _fits(cost: dict[str, float], limits: dict[str, float], margin: float) -> bool:
    return all(cost[k] <= (margin if k == "latency_ms" else 1.0) * v for k, v in limits.items())


def _plan_uniform(dense: nn.Module, graph: ChannelGraph, scores: dict[str, torch.Tensor], limits: dict[str, float],
                  tgt: Target, example: torch.Tensor, cfg: CompressConfig, ui: UI) -> dict[str, Any]:
    """The same keep ratio in every group (rounded to the target's multiple), searched on measured cost."""
    mult = tgt.channel_multiple

    def counts(r: float) -> dict[str, int]:
        return {g.id: round_channels(r * g.size, mult, g.size) for g in graph.prunable}

    # the smallest model first: if even one block per group misses, say by how much and stop
    floor_keep = _keep_from_counts(graph, scores, counts(0.0))
    floor, _ = _candidate_cost(dense, floor_keep, example, tgt, cfg)
    if not _fits(floor, limits, 1.0):
        raise BudgetMissed("budget cannot be met even with one channel block per group: " + _shortfall(floor, limits))
    lo, hi, best = 0.0, 1.0, (0.0, floor_keep, floor)
    tried = [{"label": "r=0 (floor)", "latency_ms": floor["latency_ms"], "macs": floor["macs"]}]
    with ui.progress("searching keep ratio on measured latency", total=8) as bar:
        for _ in range(8):
            r = (lo + hi) / 2
            keep = _keep_from_counts(graph, scores, counts(r))
            cost, _ = _candidate_cost(dense, keep, example, tgt, cfg)
            if _fits(cost, limits, cfg.margin):
                lo, best = r, (r, keep, cost)
            else:
                hi = r
            bar.advance(1, info=f"r={r:.3f} {cost['latency_ms']:.3f} ms")
            tried.append({"label": f"r={r:.3f}", "latency_ms": cost["latency_ms"], "macs": cost["macs"]})
    r, keep, cost = best
    return {"planner": "uniform", "ratio": r, "keep": keep, "counts": {g.id: len(keep.get(g.id, range(g.size))) for g in graph.prunable},
            "measured": cost, "limits": limits, "candidates": tried}


def _plan_milp(dense: nn.Module, graph: ChannelGraph, scores: dict[str, torch.Tensor], resolved: Limits, limits: dict[str, float],
               tgt: Target, example: torch.Tensor, cfg: CompressConfig, ui: UI, model_name: str, dense_ms: float,
               calib: Any = None) -> dict[str, Any]:
    """The exact planner on the target's latency table; re-planned with a tighter limit while measurement misses."""
    from edgeprune.plan import PlanConfig
    from edgeprune.plan import plan as solve
    from edgeprune.profile import default_profile_path, find_profile, load_profile, profile

    path = find_profile(tgt.name, model_name, cfg.profiles)
    if path is not None:
        prof = load_profile(path, target=tgt)
    else:
        path = default_profile_path(tgt.name, model_name, cfg.profiles)
        ui.log(f"no profile for {model_name} on {tgt.name}: measuring one (saved to {path}) ...")
        prof = profile(dense, example, tgt, model_name=model_name, out=path, ui=ui)
    pred = prof.predictor()
    # the table was measured on another day (or a busier machine) than this run's dense measurement:
    # plan in the predictor's own scale, translating the measured limit by the dense model's ratio
    pred_dense = pred.model_cost(graph.signatures())
    to_pred = pred_dense / dense_ms
    attempts: list[dict[str, Any]] = []
    best = None
    errors: list[BudgetMissed] = []  # the first series offers every precision: its error names the true minimum
    precisions = list(cfg.precisions or tgt.precisions)
    series = [precisions]
    if "int8" in precisions and len(precisions) > 1 and "latency_ms" in limits:
        # the tables price each layer's precision but not the Q/DQ boundaries between fp32 and int8 layers
        # (docs/plan.md): also plan with every layer int8, which has none, and keep the better measured plan
        series.append(["int8"])
    # int8 plans can all miss on measurement where the int8 kernels hit a floor (ResNet-20 on ORT: pruned int8 models
    # ran no faster than the unpruned int8 one), while an fp32 plan would fit: then plan fp32 only as well
    fp32_fallback = "fp32" in precisions and "int8" in precisions and "latency_ms" in limits
    with tempfile.TemporaryDirectory(prefix="edgeprune-plan-") as work:
        dense_path, _ = engine_onnx(dense, example, tgt, None, None, Path(work), name="dense")  # once, for every attempt
        for precs in series:
            only = " (every layer int8)" if precs == ["int8"] and len(series) > 1 else \
                " (fp32 only)" if precs == ["fp32"] and len(series) > 1 else ""
            scale = cfg.margin
            seen: set = set()
            for _ in range(cfg.max_attempts):
                key = f"lat:{tgt.name}"
                b = resolved.rebased(key, pred_dense)  # in the predictor's scale, aimed at limit x scale
                b = b.with_limit(key, limits["latency_ms"] * to_pred * scale if "latency_ms" in limits else None)
                try:
                    p = solve(dense, scores, b, {tgt.name: pred}, PlanConfig(precisions=precs, model_name=model_name,
                              weighting=cfg.weighting, max_prune=cfg.max_prune), graph=graph, example=example, targets=[tgt])
                except BudgetMissed as err:  # no tighter plan with these precisions: try the next series
                    errors.append(err)
                    break
                keep = {gid: list(map(int, idx)) for gid, idx in p.keep.items()}
                key = (tuple(sorted((g, tuple(k)) for g, k in keep.items())), tuple(sorted(p.precisions.items())))
                if key in seen:  # the solver returned a plan this series already measured: nothing new to learn
                    break
                seen.add(key)
                cost, _ = _candidate_cost(dense, keep, example, tgt, cfg, dict(p.precisions), calib, (dense_path, dense_ms))
                n8 = sum(v == "int8" for v in p.precisions.values())
                label = f"plan {len(attempts) + 1}{only}"
                attempts.append({"scale": scale, "predicted_ms": p.targets[tgt.name]["predicted"] / to_pred,
                                 "measured_ms": cost["latency_ms"], "solver_s": p.wall_s, "int8_layers": n8, "label": label,
                                 "objective": p.objective})
                ui.log(f"  {label}: {n8} int8 layers, predicted {attempts[-1]['predicted_ms']:.3f} ms, "
                       f"measured {cost['latency_ms']:.3f} ms (limit {limits.get('latency_ms', float('nan')):.3f} ms)")
                if "latency_ms" not in limits:
                    best = (p, keep, cost)
                    break
                if _fits(cost, limits, 1.0) and (best is None or p.objective > best[0].objective):
                    best = (p, keep, cost)
                # aim the next plan at the margin: tighter when measurement missed, looser when it left
                # more than 10% of the budget unused (the predictor errs both ways; slack costs accuracy)
                ratio = cost["latency_ms"] / limits["latency_ms"]
                if cfg.margin * 0.9 <= ratio <= 1.0 and _fits(cost, limits, 1.0):
                    break
                scale *= cfg.margin / max(ratio, 1e-9)
            if best is None and fp32_fallback and precs is series[-1] and ["fp32"] not in series:
                series.append(["fp32"])
    if best is None and errors:
        if not attempts:
            raise errors[0]
        last = min(attempts, key=lambda a: a["measured_ms"])
        raise BudgetMissed(f"the measured latency misses the budget: best plan measured {last['measured_ms']:.3f} ms "
                           f"(predicted {last['predicted_ms']:.3f} ms), budget is {limits['latency_ms']:.3f} ms, and "
                           f"no tighter plan exists ({first_line(errors[0])})")
    if best is None:
        raise BudgetMissed(f"no plan met the measured latency budget after {len(attempts)} attempts "
                           f"(last measured {attempts[-1]['measured_ms']:.3f} ms, budget {limits['latency_ms']:.3f} ms)")
    p, keep, cost = best
    doc = p.to_dict()
    doc.update({"planner": "milp", "keep": keep, "measured": cost, "limits": limits, "attempts": attempts,
                "profile": str(path)})
    return doc


def _measure_pair(dense: nn.Module, engine: Any, example: torch.Tensor, tgt: Target, cfg: CompressConfig) -> dict[str, Timing]:
    """Dense fp32 model and the compressed engine, timed interleaved (median of medians)."""
    from edgeprune.compile.onnx_export import export_onnx
    from edgeprune.profile.timing import interleaved

    comp_path, disabled = engine.onnx_engine()
    with tempfile.TemporaryDirectory() as d:
        pd = export_onnx(dense, example, Path(d) / "dense.onnx")
        runners = _runners({"dense": (pd, []), "compressed": (comp_path, disabled)}, tgt)
        if runners is not None:
            return interleaved(runners, cfg.protocol, cfg.final_repeats)
        return {"dense": time_engine(pd, tgt, cfg.protocol), "compressed": time_engine(comp_path, tgt, cfg.protocol, disabled)}


def _figures(model: nn.Module, ds: Dataset | None, example: torch.Tensor, t: Timing, cfg: CompressConfig,
             engine: Any = None, bits: dict[str, int] | None = None) -> ModelFigures:
    if ds is None:
        top1 = float("nan")
    elif engine is not None:  # int8: the engine is what ships, so its accuracy is the one reported
        top1 = evaluate(engine, ds.test, cfg.eval_limit, batch_size=250)
    else:
        top1 = evaluate(model, ds.test, cfg.eval_limit)
    return ModelFigures(top1, count_params(model), count_macs(model, example), model_bytes(model, bits), t.median, t.p10, t.p90)


def _check_budget(resolved: Limits, tgt: Target, dense_ms: float, comp_ms: float, d: ModelFigures, c: ModelFigures) -> tuple[bool, list[str]]:
    ok, lines = True, []

    def check(name: str, value: float, limit: float, unit: str) -> None:
        nonlocal ok
        good = value <= limit
        ok &= good
        status = "met" if good else f"MISSED by {value - limit:.4g} {unit} ({100 * (value / limit - 1):.1f}%)"
        lines.append(f"{name}: {value:.4g} {unit} <= {limit:.4g} {unit}: {status}")

    # a ratio latency limit follows the final, interleaved dense measurement (same conditions as the compressed one)
    lat = resolved.rebased(f"lat:{tgt.name}", dense_ms).target(tgt.name)
    if lat is not None and lat.limit is not None:
        check(f"latency on {tgt.name}", comp_ms, lat.limit, "ms")
    for key, name, value, unit in (("macs", "MACs", c.macs, "MACs"), ("model_bytes", "model bytes", c.bytes, "B")):
        e = resolved.get(key)
        if e is not None and e.limit is not None:
            check(name, value, e.limit, unit)
    return ok, lines
