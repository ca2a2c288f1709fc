"""The end of a run: each model's figures, the budget checked against measurement, report.json and friends."""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from edgeprune.errors import AccuracyDropped, BudgetMissed, VerificationFailed
from edgeprune.fileio import write_json
from edgeprune.pipeline.config import CompressResult, ModelFigures
from edgeprune.pipeline.context import Run
from edgeprune.profile.timing import Timing


class RandomImages:
    """Seeded random inputs with dummy labels: what ``verify`` compares engines on when no data is given
    (``random``: verify then gates on the output error and reports no accuracy)."""

    random = True

    def __init__(self, example: Any) -> None:
        self.example = example  # a tensor, or a tuple/dict of tensors: random inputs take each one's shape

    def batches(self, batch_size: int = 256, limit: int | None = None) -> Iterator[tuple[Any, torch.Tensor]]:
        """``limit`` (default 100) random inputs in batches, the same on every call."""
        from edgeprune.data.batch import map_inputs

        g = torch.Generator().manual_seed(0)
        n = limit or 100
        for i in range(0, n, batch_size):
            b = min(batch_size, n - i)
            x = map_inputs(self.example, lambda t, b=b: torch.randn(b, *t.shape[1:], generator=g).to(t.dtype)
                           if t.is_floating_point() else t[:1].expand(b, *t.shape[1:]).clone())
            yield x, torch.zeros(b, dtype=torch.long)


def figures(run: Run, model: nn.Module, t: Timing, engine: Any = None, bits: dict[str, int] | None = None) -> ModelFigures:
    """Accuracy (of the engine when it is int8: that is what ships), size, MACs and measured latency."""
    from edgeprune.metrics import count_macs, count_params, evaluate, model_bytes

    with run.clock.work("measure"):
        if run.data is None:
            value = None  # "not measured", never nan
        elif engine is not None:
            value = evaluate(engine, run.data, run.config.eval_limit, batch_size=250, eval_fn=run.eval_fn)
        else:
            value = evaluate(model, run.data, run.config.eval_limit, eval_fn=run.eval_fn)
    top1 = value if run.eval_fn is None else None
    return ModelFigures(top1, count_params(model), count_macs(model, run.example), model_bytes(model, bits),
                        t.median, t.p10, t.p90, run.backend.unit, run.backend.simulated, value, run.metric)


def check_budget(run: Run, d: ModelFigures, c: ModelFigures) -> tuple[bool, list[str]]:
    """Every limit against the final measurement: ``(all met, one line per limit)``."""
    ok, lines = True, []

    def check(name: str, value: float, limit: float, unit: str) -> None:
        nonlocal ok
        good = value <= limit
        ok &= good
        status = "met" if good else f"MISSED by {value - limit:.4g} {unit} ({100 * (value / limit - 1):.1f}%)"
        lines.append(f"{name}: {value:.4g} {unit} <= {limit:.4g} {unit}: {status}")

    tgt = run.target.name
    # a ratio latency limit follows the final, interleaved dense measurement (same conditions as the compressed one)
    lat = run.limits.rebased(f"lat:{tgt}", d.latency_ms).target(tgt)
    if lat is not None and lat.limit is not None:
        check(f"latency on {tgt}", c.latency_ms, lat.limit, run.unit_label)
    values = {"macs": ("MACs", c.macs, "MACs"), "model_bytes": ("model bytes", c.bytes, "B")}
    peak = run.limits.get("peak_memory")
    if peak is not None and peak.limit is not None:
        values["peak_memory"] = ("peak memory", run.plan["measured"]["peak_memory"], "B")
    for key, (name, value, unit) in values.items():
        e = run.limits.get(key)
        if e is not None and e.limit is not None:
            check(name, value, e.limit, unit)
    return ok, lines


def accuracy_guard(run: Run, dense: ModelFigures, comp: ModelFigures) -> dict[str, Any] | None:
    """``--max-drop`` checked: the allowed and measured drop in points, and whether it held (None without a guard)."""
    from edgeprune.pipeline.config import parse_max_drop

    if run.config.max_drop is None:
        return None
    value, relative = parse_max_drop(run.config.max_drop)
    before = dense.top1 if dense.top1 is not None else dense.metric  # top-1, else the user's eval_fn figure
    after = comp.top1 if comp.top1 is not None else comp.metric
    measured = before is not None and after is not None and not math.isnan(before - after)
    allowed = value * before / 100.0 if relative and measured else value
    drop = before - after if measured else None  # not measured: the guard cannot hold
    return {"max_drop": str(run.config.max_drop), "allowed_pt": allowed, "drop_pt": drop,
            "passed": measured and drop <= allowed}


def candidates(run: Run, dense: ModelFigures, comp: ModelFigures) -> list[dict[str, Any]]:
    """Every model the run measured: dense, each planner candidate (accuracy not evaluated), the final one."""
    out = [{"label": "dense", "latency_ms": dense.latency_ms, "top1": dense.top1}]
    for i, c in enumerate(run.plan.get("candidates", []) + run.plan.get("attempts", [])):
        ms = c.get("latency_ms", c.get("measured_ms"))
        if ms is not None:
            out.append({"label": c.get("label", f"candidate {i + 1}"), "latency_ms": ms, "top1": None})
    out.append({"label": "compressed (fine-tuned)", "latency_ms": comp.latency_ms, "top1": comp.top1})
    return out


def report_doc(run: Run, dense: ModelFigures, comp: ModelFigures, met: bool, detail: list[str]) -> dict[str, Any]:
    """The contents of report.json."""
    from edgeprune.environment import machine_info, versions

    cfg, ds = run.config, run.data
    return {
        "schema": 1,
        "model": run.model_name,
        "target": run.target.name,
        "budget": str(run.budget),
        "budget_met": met,
        "budget_detail": detail,
        "latency_unit": run.backend.unit,
        "simulated": run.backend.simulated,
        "dense": asdict(dense),
        "compressed": asdict(comp),
        "speedup": dense.latency_ms / max(comp.latency_ms, 1e-12),
        "top1_drop": None if dense.top1 is None or comp.top1 is None else dense.top1 - comp.top1,
        "accuracy_guard": accuracy_guard(run, dense, comp),
        "metric": {"name": run.metric, "dense": dense.metric, "compressed": comp.metric,
                   "higher_is_better": True, "measured": dense.metric is not None},
        "compressed_top1_from": (f"int8 engine ({run.backend.description})" if run.int8
                                 else "pruned PyTorch model (fp32 engine verified equal)"),
        "precisions": run.precisions,
        "plan": {k: v for k, v in run.plan.items() if k != "keep"},
        "candidates": candidates(run, dense, comp),
        "verify": run.verify.to_dict(),
        "config": {k: (asdict(v) if hasattr(v, "__dataclass_fields__") else v) for k, v in asdict(cfg).items()},
        "data": ds.name if ds is not None else None,
        "eval_images": _eval_images(ds, cfg.eval_limit),
        "machine": machine_info(),
        "versions": versions(),
    }


def _eval_images(ds: Any, limit: int | None) -> int | None:
    """How many samples the quality figure was measured on (None: unknown or no data)."""
    if ds is None:
        return None
    if ds.dataset is not None:
        n = len(ds.dataset.test)
    else:
        inner = getattr(ds.val, "dataset", None)
        try:
            n = len(inner) if inner is not None else len(ds.val)  # type: ignore[arg-type]
        except TypeError:
            return limit
    return n if limit is None else min(n, limit)


def write_outputs(run: Run, report: dict[str, Any]) -> None:
    """plan.json (with its ``source``: ``edgeprune apply`` and ``load_pruned`` read it), weights.pt (the compressed
    model's state_dict, for ``load_pruned``), report.json, and report.html/md when the report extra is installed."""
    from edgeprune.fileio import atomic_path
    from edgeprune.models.pruned import plan_source, write_plan

    source = plan_source(run.model_name, run.config.model_args, run.example, run.graph, [run.target.name], str(run.budget))
    write_plan(run.out / "plan.json", run.plan, source)
    with atomic_path(run.out / "weights.pt") as tmp:
        torch.save(run.small.state_dict(), tmp)
    write_json(run.out / "report.json", report)
    try:
        from edgeprune.report import write_report

        write_report(run.out)
    except ImportError:
        pass


def raise_failures(result: CompressResult, run: Run) -> None:
    """:class:`VerificationFailed` when the engine disagrees with PyTorch, :class:`BudgetMissed` when a limit is missed
    (both carry ``result``: the files are written)."""
    v = run.verify
    if not v.passed:
        err: Exception = VerificationFailed(f"engine disagrees with PyTorch: {v.summary()}")
        err.result = result  # type: ignore[attr-defined]
        raise err
    guard = result.report.get("accuracy_guard")
    dropped = None
    if guard is not None and not guard["passed"]:
        drop = "not measured" if guard["drop_pt"] is None else f"{guard['drop_pt']:.2f} pt"
        dropped = f"top-1 dropped {drop}, more than --max-drop {guard['max_drop']} ({guard['allowed_pt']:.2f} pt)"
    if not result.budget_met:
        err = BudgetMissed("budget missed: " + "; ".join([d for d in result.budget_detail if "MISSED" in d]
                                                         + ([dropped] if dropped else [])))
        err.result = result  # type: ignore[attr-defined]
        raise err
    if dropped:
        err = AccuracyDropped(dropped + f" (files written to {result.out_dir})")
        err.result = result  # type: ignore[attr-defined]
        raise err
