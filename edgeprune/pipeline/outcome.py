"""The end of a run: each model's figures, the budget checked against measurement, report.json and friends."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from edgeprune.errors import BudgetMissed, VerificationFailed
from edgeprune.fileio import write_json
from edgeprune.pipeline.config import CompressResult, ModelFigures
from edgeprune.pipeline.context import Run
from edgeprune.profile.timing import Timing


class RandomImages:
    """Seeded random inputs with dummy labels: what ``verify`` compares engines on when no data is given
    (``random``: verify then gates on the output error and reports no accuracy)."""

    random = True

    def __init__(self, example: torch.Tensor) -> None:
        self.shape = tuple(example.shape[1:])

    def batches(self, batch_size: int = 256, limit: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``limit`` (default 100) random inputs in batches, the same on every call."""
        g = torch.Generator().manual_seed(0)
        n = limit or 100
        for i in range(0, n, batch_size):
            x = torch.randn(min(batch_size, n - i), *self.shape, generator=g)
            yield x, torch.zeros(len(x), dtype=torch.long)


def figures(run: Run, model: nn.Module, t: Timing, engine: Any = None, bits: dict[str, int] | None = None) -> ModelFigures:
    """Accuracy (of the engine when it is int8: that is what ships), size, MACs and measured latency."""
    from edgeprune.metrics import count_macs, count_params, evaluate, model_bytes

    with run.clock.work("measure"):
        if run.data is None:
            top1 = float("nan")
        elif engine is not None:
            top1 = evaluate(engine, run.data.test, run.config.eval_limit, batch_size=250)
        else:
            top1 = evaluate(model, run.data.test, run.config.eval_limit)
    return ModelFigures(top1, count_params(model), count_macs(model, run.example), model_bytes(model, bits),
                        t.median, t.p10, t.p90, run.backend.unit, run.backend.simulated)


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
        "top1_drop": dense.top1 - comp.top1,
        "compressed_top1_from": (f"int8 engine ({run.backend.description})" if run.int8
                                 else "pruned PyTorch model (fp32 engine verified equal)"),
        "precisions": run.precisions,
        "plan": {k: v for k, v in run.plan.items() if k != "keep"},
        "candidates": candidates(run, dense, comp),
        "verify": run.verify.to_dict(),
        "config": {k: (asdict(v) if hasattr(v, "__dataclass_fields__") else v) for k, v in asdict(cfg).items()},
        "data": ds.name if ds is not None else None,
        "eval_images": len(ds.test) if ds is not None and cfg.eval_limit is None else cfg.eval_limit,
        "machine": machine_info(),
        "versions": versions(),
    }


def write_outputs(run: Run, report: dict[str, Any]) -> None:
    """plan.json, report.json, and report.html/md when the report extra is installed."""
    write_json(run.out / "plan.json", run.plan)
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
        err: Exception = VerificationFailed(f"engine disagrees with PyTorch: top-1 agreement {v.top1_agreement:.1f}% "
                                            f"on {v.images} images")
        err.result = result  # type: ignore[attr-defined]
        raise err
    if not result.budget_met:
        err = BudgetMissed("budget missed: " + "; ".join(d for d in result.budget_detail if "MISSED" in d))
        err.result = result  # type: ignore[attr-defined]
        raise err
