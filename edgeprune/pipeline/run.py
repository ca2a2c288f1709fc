"""``compress``: a list of stages from a trained model to a verified engine that meets a measured budget.

Each stage is one short function of the :class:`~edgeprune.pipeline.context.Run`; the ones worth keeping
checkpoint into ``<out>/state/`` (``resume=True`` continues after a crash), and each one's wall time goes to
report.json (``stage_seconds``).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeprune.budget import Budget, DenseContext
from edgeprune.config import Target
from edgeprune.errors import BadInput
from edgeprune.fileio import atomic_path
from edgeprune.pipeline.config import CompressConfig, CompressResult
from edgeprune.pipeline.context import Inputs, Run, open_run
from edgeprune.pipeline.stages import Stages
from edgeprune.ui import QUIET, UI


def estimate_seconds(run: Run) -> float:
    """A rough wall-time estimate on an idle 2-core machine, scaled from the measured parts of a ResNet-20 run by
    the model's MACs, plus the latency profile this run has to make (none when one exists)."""
    from edgeprune.metrics import count_macs

    cfg, ds = run.config, run.data
    macs = max(count_macs(run.dense, run.example), 1)
    per_measure = 1.0 if run.backend.simulated else min(cfg.protocol.max_seconds, 3.0) + 1.0 + macs / 2e9
    searches = 9 if cfg.planner == "uniform" else 2
    n_train = (ds.train_size() or 0) if ds is not None else 0
    train = cfg.epochs * n_train * train_seconds_per_image(run, kd=cfg.kd) if n_train and cfg.epochs > 0 else 0.0
    final = 2 * cfg.final_repeats * per_measure
    return 15 + per_measure * (1 + searches) + train + final + 15 + profile_seconds(run)


def train_seconds_per_image(run: Run, kd: bool, batch: int = 8) -> float:
    """Seconds one training image costs, timed: a step (forward + backward) of the dense model on ``batch`` copies
    of the example after a warm-up step, plus a teacher forward with KD and a fifth for data loading and the
    optimiser. Throughput per MAC differs 6x between a ResNet-20 and a MobileNetV2 at 224 px, so it is measured."""
    import copy

    import torch

    from edgeprune.data.batch import call_model, concat, flat_outputs
    from edgeprune.environment import free_threads

    x = concat([run.example] * batch)
    model = copy.deepcopy(run.dense).train()  # a copy: a training-mode forward moves BatchNorm statistics
    times, threads = [], torch.get_num_threads()
    torch.set_num_threads(free_threads(threads)[0])  # as recover() will train: on the cores left free
    try:
        for _ in range(2):
            t = time.perf_counter()
            flat_outputs(call_model(model, x)).float().square().mean().backward()
            times.append(time.perf_counter() - t)
    finally:
        torch.set_num_threads(threads)
    del model
    step = min(times) / batch
    return step * (1.0 + (0.35 if kd else 0.0)) * 1.2


def profile_seconds(run: Run) -> float:
    """About how long this run spends making its latency predictor: nothing with a profile of this model, a
    minute of calibration with the target's device cost model, else the exhaustive table or, above
    ``EXHAUSTIVE_LIMIT`` configurations, building the device cost model first."""
    from edgeprune.costmodel import find_device_model
    from edgeprune.costmodel.measure import BuildConfig
    from edgeprune.profile import find_profile, profile_input_size, profile_model_name
    from edgeprune.profile.profiler import EXHAUSTIVE_LIMIT, SECONDS_PER_CONFIG, exhaustive_size

    cfg = run.config
    if run.backend.simulated or cfg.planner == "uniform" or cfg.plan_file is not None:
        return 0.0
    if find_profile(run.target.name, profile_model_name(run.model_name), cfg.profiles,
                    profile_input_size(run.example)) is not None:
        return 0.0
    if find_device_model(run.target, cfg.profiles) is not None:
        return 60.0
    n = exhaustive_size(run.graph, run.target)
    return BuildConfig().budget_s + 60.0 if n > EXHAUSTIVE_LIMIT else n * SECONDS_PER_CONFIG


def announce(run: Run) -> None:
    """Say what the run will do and where it writes (the time estimate follows once the groups are known)."""
    cfg, tgt = run.config, run.target
    run.ui.log(f"[bold]edgeprune compress[/bold]: {run.model_name} on {tgt.name} ({tgt.device}), budget {run.budget}"
               f"{'; latency is simulated (' + run.backend.unit + ')' if run.backend.simulated else ''}")
    steps = f"apply {cfg.plan_file}" if cfg.plan_file else f"score channels ({cfg.criterion}), plan ({cfg.planner})"
    run.ui.log(f"  steps: measure dense, {steps}, prune, "
               f"fine-tune {cfg.epochs:g} epoch(s){' with KD' if cfg.kd else ''}, compile, verify, measure; out: {run.out}")


def measure_dense(run: Run) -> None:
    """The dense model's latency on the target (ms, or simulated cycles)."""
    run.ui.log("measuring the dense model ...")
    t = run.stages.json("dense", lambda: run.meter.time_model(run.dense).to_dict())
    run.dense_latency = float(t["median"])
    run.ui.log(f"  dense median latency {run.dense_latency:.4g} {run.unit_label}")


def find_groups(run: Run) -> None:
    """The coupled channel groups of the dense model."""
    from edgeprune.graph import channel_groups

    run.graph = channel_groups(run.dense, run.example)
    freeze_groups(run.graph, run.config.freeze)
    if run.config.plan_file is not None:  # apply: a plan made for another model fails before any measurement
        from edgeprune.models.pruned import check_plan, read_plan

        check_plan(read_plan(run.config.plan_file), run.graph)
    if not run.graph.prunable:
        raise BadInput(f"model {run.model_name} has no prunable channel groups")
    est = run.estimated_s = estimate_seconds(run)  # here: the profile's share needs the groups
    run.ui.log(f"  estimated time: about {max(1, round(est / 60))}-{max(2, round(2 * est / 60))} min on 2 cores "
               "(more on a busy machine)")


def freeze_groups(graph: Any, patterns: tuple[str, ...]) -> None:
    """Mark the groups of layers matching ``patterns`` (globs, as ``plan --freeze``) unprunable, with the reason."""
    from edgeprune.plan.choices import frozen_groups

    for gid in frozen_groups(graph, patterns) if patterns else ():
        g = graph.group(gid)
        if g.prunable:
            g.prunable, g.reason = False, "frozen by --freeze"


def resolve_budget(run: Run) -> None:
    """The budget as absolute limits, once; a latency ratio is of the measured dense latency (backend unit)."""
    name = run.target.name
    ctx = DenseContext(run.dense, run.graph.signatures(), measured={name: run.dense_latency},
                       units={name: run.backend.unit}, target_signatures={name: run.dense_signatures()})
    run.limits = run.budget.resolve(ctx, {name: run.target})


def score_channels(run: Run) -> None:
    """Importance of every channel (checkpointed)."""
    from edgeprune.importance import importance

    if run.config.plan_file is not None:  # apply: the plan is given, nothing to score
        return

    def compute() -> dict[str, torch.Tensor]:
        run.ui.log(f"scoring channels ({run.config.criterion}) ...")
        with run.clock.work("score"):
            return importance(run.dense, run.data, run.config.criterion, graph=run.graph,
                              batches=run.config.score_batches, seed=run.config.seed, loss_fn=run.loss_fn)

    run.scores = run.stages.tensors("scores", compute)


def plan_channels(run: Run) -> None:
    """The plan (channels kept per group, precision per layer), searched against measurement (checkpointed)."""
    from edgeprune.pipeline.given_plan import plan_from_file
    from edgeprune.pipeline.search import search_plan

    run.plan = run.stages.json("plan", lambda: plan_from_file(run) if run.config.plan_file else search_plan(run))


def prune_model(run: Run) -> None:
    """Remove the planned-away channels for real."""
    from edgeprune.prune import prune

    run.small = prune(run.dense, dict(run.plan["keep"]), run.example)


def recover(run: Run) -> None:
    """Fine-tune the pruned model (with KD from the dense one; checkpointed)."""
    cfg, ds = run.config, run.data
    if ds is not None and cfg.epochs > 0:
        if run.ranks.active:  # a resumed run whose rank 0 already has the fine-tuned weights: the others are done
            from edgeprune.pipeline.distributed import from_main

            if from_main(run.ranks, lambda: run.stages.saved("finetuned")) and not run.ranks.is_main:
                return

        def finetune() -> dict[str, torch.Tensor]:
            from edgeprune.recover import RecoverConfig
            from edgeprune.recover import recover as fit

            n = ds.train_size()
            run.ui.log(f"fine-tuning {cfg.epochs:g} epoch(s) on {n if n is not None else 'the'} training samples"
                       f"{' with KD from the dense model' if cfg.kd else ''} ...")
            rc = RecoverConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed,
                               checkpoint_dir=str(run.stages.dir), device=cfg.train_device,
                               resume=cfg.resume)
            data = ds.dataset if ds.dataset is not None else ds  # the numpy fast path where there is one
            with run.clock.work("train"):
                fit(run.small, data, teacher=run.dense if cfg.kd else None, config=rc, ui=run.ui,
                    loss_fn=run.loss_fn, eval_fn=run.eval_fn)
            return run.small.state_dict()

        run.small.load_state_dict(run.stages.tensors("finetuned", finetune))
    run.small.eval()


def compile_engine(run: Run) -> None:
    """Emit the engine: int8 where the plan says so (and the backend runs QDQ) or where the backend is int8-only."""
    from edgeprune.compile import compile as emit

    precisions, quantize = run.precisions, run.quantize
    if quantize:
        run.ui.log(f"quantising {sum(p == 'int8' for p in precisions.values())} of {len(precisions)} layers to int8 "
                   "(post-training, calibrated on 256 training images) ...")
    exclude = [n for n, p in precisions.items() if p != "int8"]
    options = run.backend.compile_options(run.calib, quantize, exclude) if quantize or run.backend.int8_only else {}
    options = {**run.backend.plan_options(precisions), **options}  # e.g. an fp16 engine for a plan with fp16 layers
    from edgeprune.quant.names import model_exclusions

    with model_exclusions():  # the exclude list comes from the model's own plan: a mismatch is a bug
        run.engine = emit(run.small, run.target, run.out, run.example, **options)
    with atomic_path(run.out / "model.pt") as tmp:
        torch.save(run.small, tmp)


def verify_engine(run: Run) -> None:
    """Compare the engine with PyTorch on test images (the backend declares the agreement an engine needs); an
    int8 engine that fails gets its most int8-sensitive layers back in fp32 until it passes (int8_backoff.py)."""
    check_engine(run)
    if not run.verify.passed and run.quantize:
        from edgeprune.pipeline.int8_backoff import back_off_int8

        back_off_int8(run, compile_engine, check_engine)


def check_engine(run: Run) -> None:
    """One verification of ``run.engine`` against the PyTorch model."""
    from edgeprune.pipeline.outcome import RandomImages
    from edgeprune.verify import verify

    images = run.data if run.data is not None else RandomImages(run.example)
    with run.clock.work("measure"):
        run.verify = verify(run.engine, run.small, images, limit=500,
                            min_agreement=run.backend.verify_threshold(run.int8),
                            max_relative_error=run.backend.verify_error_threshold(run.int8))


def measure_pair(run: Run) -> None:
    """Dense model and compressed engine, timed interleaved (median of medians)."""
    import tempfile

    meter = run.meter
    run.ui.log(f"measuring dense and compressed engines ({run.config.final_repeats} interleaved repeats) ...")
    with tempfile.TemporaryDirectory(prefix="edgeprune-final-") as d:
        files = {"dense": meter.engine_file(run.dense, None, Path(d), "dense"), "compressed": meter.engine_timing_file(run.engine)}
        run.final = meter.time(files, run.config.final_repeats)


def write_report(run: Run) -> None:
    """Figures, the budget checked on measurement, and plan.json / report.json / report.html."""
    from edgeprune.pipeline.outcome import check_budget, figures, report_doc, write_outputs

    int8 = {n: 8 for n, p in run.precisions.items() if p == "int8"}
    dense = figures(run, run.dense, run.final["dense"])
    comp = figures(run, run.small, run.final["compressed"], engine=run.engine if run.int8 else None, bits=int8)
    met, detail = check_budget(run, dense, comp)
    report = report_doc(run, dense, comp, met, detail)
    write_outputs(run, report)
    run.result = CompressResult(run.small, dense, comp, report["speedup"], str(run.budget), met, detail, run.out,
                                run.plan, run.verify.to_dict(), report)


def record_time(run: Run) -> None:
    """Add the wall time, each stage's seconds and the measure/train/score/solve/other split to report.json."""
    from edgeprune.fileio import write_json

    wall = time.perf_counter() - run.started
    run.result.report.update(wall_s=wall, stage_seconds={k: round(v, 3) for k, v in run.clock.stages.items()},
                             time_split=run.clock.split(wall))
    if run.estimated_s is not None:  # what the run said it would take, against what it took (a resumed run took less)
        run.result.report["time_estimate"] = {"estimated_s": round(run.estimated_s, 1), "wall_s": round(wall, 1),
                                              "ratio": round(wall / max(run.estimated_s, 1e-9), 3),
                                              "resume": bool(run.config.resume)}
    write_json(run.out / "report.json", run.result.report)


STAGES: tuple[tuple[str, Callable[[Run], None]], ...] = (
    ("groups", find_groups),  # first: a bad --freeze fails before any measurement
    ("measure_dense", measure_dense),
    ("budget", resolve_budget),
    ("importance", score_channels),
    ("plan", plan_channels),
    ("prune", prune_model),
    ("recover", recover),
    ("compile", compile_engine),
    ("verify", verify_engine),
    ("measure_pair", measure_pair),
    ("report", write_report),
)


def compress(model: str | nn.Module = "resnet20-cifar10", data: Any = "cifar10-demo",
             target: str | Target = "cpu-ort", budget: str | Budget = "latency=0.6x", *, example_inputs: Any = None,
             loss_fn: Callable[[Any, Any], torch.Tensor] | None = None, eval_fn: Callable[[Any, Any], float] | None = None,
             config: CompressConfig | None = None, out: str | Path | None = None,
             input_shape: tuple[int, ...] | None = None, ui: UI = QUIET) -> CompressResult | None:
    """Compress ``model`` for ``target`` under ``budget``; write the engine and reports to ``out``.

    ``data``: anything :func:`edgeprune.data.as_source` takes: a torch ``DataLoader`` or re-iterable of
    ``(inputs, targets)`` batches, a ``(train, val)`` pair of them, an edgeprune ``Dataset``/``ImageSet``
    (the fast path), a :func:`~edgeprune.data.load_data` spec, or None (data-free criteria, random-input
    verification). ``example_inputs``: a tensor, tuple or dict (a multi-input model; batch 1 is used), by
    default the first sample of ``data``. ``loss_fn(outputs, targets) -> scalar`` replaces cross-entropy in
    importance and fine-tuning (KD then distils every output with MSE). ``eval_fn(model, val_batches) ->
    float`` (higher is better) replaces top-1 in the report, under ``eval_fn.name`` or ``__name__``.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) rank 0 measures, plans, compiles, verifies and writes; every rank
    prunes with rank 0's plan and fine-tunes its shard of the data with DDP; ranks other than 0 return None
    (docs/recover.md).

    Raises :class:`~edgeprune.errors.BudgetMissed` (exit code 1) when the
    measured result misses the budget and :class:`~edgeprune.errors.VerificationFailed`
    when the engine disagrees with PyTorch; the files are still written.
    """
    from edgeprune.pipeline.distributed import current_ranks, from_main, process_group
    from edgeprune.pipeline.outcome import raise_failures

    cfg = config or CompressConfig()
    ranks = current_ranks()  # under torchrun: only rank 0 measures, plans, compiles, writes and talks
    inputs = Inputs(model, data, target, budget, out, input_shape, example_inputs, loss_fn, eval_fn)
    run = open_run(inputs, cfg, ui if ranks.is_main else QUIET)  # every argument checked here, on every rank
    run.stages = Stages(run.out, cfg.resume, write=ranks.is_main)
    with process_group(ranks, cfg.train_device) as run.ranks:  # after open_run: every rank has its model and data
        if run.ranks.is_main:
            announce(run)
        run.clock.stages["open"] = time.perf_counter() - run.started  # checks, model, data, first forward pass
        run.plan = from_main(run.ranks, lambda: _plan(run))  # the plan (JSON) sent to every rank
        _run_stages(run, tuple(s for s in STAGES[_first(EVERY_RANK):] if run.ranks.is_main or s[0] in EVERY_RANK))
    if not run.ranks.is_main:
        return None  # fine-tuned its shard; rank 0 compiles, verifies and writes
    record_time(run)
    raise_failures(run.result, run)
    return run.result


# the stages every torchrun rank runs (with the plan rank 0 made); the others run on rank 0 alone
EVERY_RANK = ("prune", "recover")


def _first(names: tuple[str, ...]) -> int:
    return next(i for i, (name, _) in enumerate(STAGES) if name in names)


def _plan(run: Run) -> dict[str, Any]:
    """The stages before the first every-rank one (rank 0 alone): measure, budget, score, plan."""
    _run_stages(run, STAGES[: _first(EVERY_RANK)])
    return run.plan


def _run_stages(run: Run, stages: tuple[tuple[str, Callable[[Run], None]], ...]) -> None:
    for name, stage in stages:
        with run.clock.stage(name):
            stage(run)
