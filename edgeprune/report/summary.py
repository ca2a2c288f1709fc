"""Words and numbers shared by the HTML and Markdown reports."""
from __future__ import annotations

import math
from typing import Any

from edgeprune.report.data import RunReport


def num(v: Any) -> float | None:
    """A finite float or None."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) or math.isinf(f) else f


def human(v: Any) -> str:
    """12345678 -> '12.3 M'."""
    f = num(v)
    if f is None:
        return "n/a"
    for div, suf in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(f) >= div:
            return f"{f / div:.3g}{suf}"
    return f"{f:.3g}"


def human_bytes(v: Any) -> str:
    f = num(v)
    if f is None:
        return "n/a"
    for div, suf in ((2**30, " GiB"), (2**20, " MiB"), (2**10, " KiB")):
        if abs(f) >= div:
            return f"{f / div:.3g}{suf}"
    return f"{f:.0f} B"


def pct(v: Any, digits: int = 0) -> str:
    f = num(v)
    return "n/a" if f is None else f"{100 * f:.{digits}f}%"


def ms(v: Any) -> str:
    f = num(v)
    return "n/a" if f is None else f"{f:.3g} ms"


def latency_unit(report: dict[str, Any]) -> str:
    """The unit of a run's latency figures: ``ms``, or ``cycles (simulated)`` on a simulated target."""
    unit = report.get("latency_unit", "ms")
    return unit + (" (simulated)" if report.get("simulated") else "")


def latency(v: Any, report: dict[str, Any]) -> str:
    """A latency figure of a run in its unit (``0.412 ms``, ``2.48e+05 cycles (simulated)``)."""
    f = num(v)
    return "n/a" if f is None else f"{f:.3g} {latency_unit(report)}"


def figures(rr: RunReport) -> list[tuple[str, str, str, str]]:
    """(what, dense, compressed, change) rows of the headline table."""
    rep = rr.report
    d, c = rep["dense"], rep["compressed"]
    rows = []
    sp = num(rep.get("speedup"))
    dl, cl = num(d.get("latency_ms")), num(c.get("latency_ms"))
    if dl is not None and cl is not None:
        rows.append(("latency (median)", latency(dl, rep), latency(cl, rep),
                     f"{sp or dl / cl:.2f}x faster" if (sp or dl / cl) >= 1 else f"{cl / dl:.2f}x slower"))
    d1, c1 = num(d.get("top1")), num(c.get("top1"))
    if d1 is not None and c1 is not None:
        rows.append(("top-1 accuracy", f"{d1:.2f}%", f"{c1:.2f}%", f"{c1 - d1:+.2f} pt"))
    for key, label, fmt in (("params", "parameters", human), ("macs", "MACs", human), ("bytes", "model size", human_bytes)):
        dv, cv = num(d.get(key)), num(c.get(key))
        if dv is not None and cv is not None:
            rows.append((label, fmt(dv), fmt(cv), f"{cv / dv:.2f}x" if dv else "n/a"))
    return rows


def headline(rr: RunReport) -> str:
    """One or two sentences: what happened."""
    rep = rr.report
    d, c = rep["dense"], rep["compressed"]
    parts = []
    dl, cl = num(d.get("latency_ms")), num(c.get("latency_ms"))
    if dl and cl:
        sp = dl / cl
        parts.append(f"The compressed {rr.model} runs {sp:.2f}x {'faster' if sp >= 1 else 'slower'} than the dense model "
                     f"on {rr.target} ({latency(dl, rep)} → {latency(cl, rep)}, "
                     f"{'simulated' if rep.get('simulated') else 'measured'})")
    d1, c1 = num(d.get("top1")), num(c.get("top1"))
    if d1 is not None and c1 is not None:
        n = rep.get("eval_images")
        parts.append(f"top-1 went from {d1:.2f}% to {c1:.2f}% ({c1 - d1:+.2f} pt"
                     + (f" on {n} images" if n else "") + ")")
    keep = []
    dm, cm = num(d.get("macs")), num(c.get("macs"))
    dp, cp = num(d.get("params")), num(c.get("params"))
    if dm and cm is not None:
        keep.append(f"{cm / dm:.0%} of the MACs")
    if dp and cp is not None:
        keep.append(f"{cp / dp:.0%} of the parameters")
    if keep:
        parts.append("it keeps " + " and ".join(keep))
    met = rep.get("budget_met")
    verdict = f"The budget {rep.get('budget', '?')} was {'met' if met else 'MISSED'}."
    return (", ".join(parts[:2]) + ("; " + parts[2] if len(parts) > 2 else "") + ". " if parts else "") + verdict


def warnings(rr: RunReport) -> list[str]:
    """What a reader must not miss even when the budget was met."""
    rep = rr.report
    out = []
    d1, c1 = num(rep["dense"].get("top1")), num(rep["compressed"].get("top1"))
    if d1 is not None and c1 is not None and d1 - c1 >= 3.0:
        out.append(f"Top-1 fell by {d1 - c1:.1f} points ({d1:.2f}% → {c1:.2f}%). Fine-tune longer (--epochs), "
                   "relax the budget, or try another importance criterion before using this model.")
    v = rep.get("verify")
    if isinstance(v, dict) and v.get("passed") is False:
        out.append("The compiled engine disagrees with the PyTorch model (verification failed): do not deploy it.")
    return out


def verify_line(rr: RunReport) -> str | None:
    v = rr.report.get("verify")
    if not isinstance(v, dict) or v.get("top1_agreement") is None:
        return None
    err = num(v.get("max_abs_error"))
    return (f"engine vs PyTorch: {v['top1_agreement']:.1f}% top-1 agreement on {v.get('images', '?')} images"
            + (f", max |error| {err:.1e}" if err is not None else "")
            + (" (passed)" if v.get("passed") else " (FAILED)" if v.get("passed") is False else ""))


def latency_limit(rr: RunReport) -> float | None:
    """The absolute latency limit (in the run's latency unit), when the budget had one."""
    limits = (rr.plan or {}).get("limits") or {}
    lim = limits.get("latency", limits.get("latency_ms"))  # "latency_ms": older reports
    if num(lim) is not None:
        return float(lim)
    for b in rr.budget:
        if b.name.startswith("latency") and b.limit.endswith(" ms"):
            return num(b.limit.split()[0])
    return None


def audit_rows(a: dict[str, Any]) -> list[tuple[str, str]]:
    """The predictor audit as (figure, value) rows."""
    rows = [("configurations measured", f"{a.get('n', '?')}"
             + (f" ({a['aligned'].get('n', 0)} aligned, {a['unaligned'].get('n', 0)} unaligned)"
                if isinstance(a.get("aligned"), dict) and isinstance(a.get("unaligned"), dict) else ""))]
    if a.get("median_abs_error") is not None:
        rows.append(("median |error|", pct(a["median_abs_error"], 1)))
        rows.append(("within ±5% / ±10%", f"{pct(a.get('within_5pct'))} / {pct(a.get('within_10pct'))}"))
    if a.get("max_abs_error") is not None:
        rows.append(("worst |error|", pct(a["max_abs_error"], 1)))
    for key in ("aligned", "unaligned"):
        s = a.get(key)
        if isinstance(s, dict) and s.get("n"):
            rows.append((f"{key} widths: median |error|, within ±5%", f"{pct(s.get('median_abs_error'), 1)}, {pct(s.get('within_5pct'))}"))
    tr = a.get("test_retest")
    if isinstance(tr, dict) and tr.get("median_spread") is not None:
        rows.append(("test-retest spread of the measurement (median)",
                     f"{pct(tr['median_spread'], 1)} ({pct(tr.get('within_5pct'))} of models within 5%)"))
    r = a.get("relative_to_dense")
    if isinstance(r, dict) and r.get("median_abs_error") is not None:
        rows.append(("ratio to dense (what 0.6x budgets use): median |error|, within ±5%",
                     f"{pct(r['median_abs_error'], 1)}, {pct(r.get('within_5pct'))}"))
    b = a.get("macs_baseline")
    if isinstance(b, dict) and b.get("median_abs_error") is not None:
        rows.append(("for comparison, a MAC-count line: median |error|, within ±5%",
                     f"{pct(b['median_abs_error'], 1)}, {pct(b.get('within_5pct'))}"))
    if a.get("date"):
        rows.append(("audited", str(a["date"])))
    return rows


def oracle_rows(rr: RunReport) -> list[tuple[str, str, str, str]]:
    """(criterion, Spearman, top-k overlap, bottom-k overlap) of each graded criterion."""
    out = []
    for g in rr.oracle or []:
        vals = [num(g.get(k)) for k in ("spearman", "topk_overlap", "bottomk_overlap")]
        out.append((str(g.get("criterion", "?")), *("n/a" if v is None else f"{v:.2f}" for v in vals)))
    return out


def run_rows(rr: RunReport) -> list[tuple[str, str]]:
    """Target, machine, versions, configuration."""
    rep = rr.report
    rows = [("model", rr.model), ("target", rr.target)]
    if rep.get("data"):
        rows.append(("data", f"{rep['data']}" + (f" ({rep['eval_images']} test images)" if rep.get("eval_images") else "")))
    m = rep.get("machine") or {}
    if m:
        rows.append(("machine", ", ".join(str(x) for x in (m.get("cpu"), f"{m.get('cores')} cores" if m.get("cores") else None,
                                                                  m.get("isa"), m.get("os")) if x)))
    v = rep.get("versions") or {}
    if v:
        rows.append(("versions", ", ".join(f"{k} {val}" for k, val in v.items())))
    if m.get("python"):
        rows.append(("python", str(m["python"])))
    cfg = rep.get("config") or {}
    if cfg:
        keys = ("criterion", "planner", "epochs", "kd", "lr", "batch_size", "seed", "margin", "final_repeats")
        rows.append(("configuration", ", ".join(f"{k}={cfg[k]}" for k in keys if k in cfg)))
        proto = cfg.get("protocol")
        if isinstance(proto, dict):
            rows.append(("timing protocol", ", ".join(f"{k}={val}" for k, val in proto.items())))
    plan = rr.plan or {}
    if plan.get("planner"):
        extra = f", keep ratio {plan['ratio']:.3f}" if num(plan.get("ratio")) is not None else ""
        rows.append(("planner", f"{plan['planner']}{extra}"))
    if num(rep.get("wall_s")) is not None:
        rows.append(("run time", f"{rep['wall_s'] / 60:.1f} min"))
    files = sorted(p.name for p in rr.run_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    rows.append(("run folder", f"{rr.run_dir} ({', '.join(files)})"))
    return rows
