"""``report.md``: the same report as text, for terminals and pull requests (charts are in report.html)."""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from edgeprune.report import summary as S
from edgeprune.report.data import RunReport


def _cell(v: Any) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[int] = ()) -> str:
    if not rows:
        return ""
    out = ["| " + " | ".join(_cell(h) for h in head) + " |",
           "|" + "|".join("---:" if i in right else "---" for i in range(len(head))) + "|"]
    out += ["| " + " | ".join(_cell(v) for v in r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def _notes(notes: Sequence[str]) -> str:
    return "".join(f"\n> **Note:** {n.strip()}{'' if n.strip()[-1:] in '.!?' else '.'}\n" for n in notes if n)


def render(rr: RunReport, fig_notes: dict[str, str]) -> str:
    """The whole document."""
    rep = rr.report
    met = bool(rep.get("budget_met"))
    md = [f"# edgeprune report: {rr.model} on {rr.target}\n\n",
          f"**{'Budget met' if met else 'Budget MISSED'}** ({rep.get('budget', '?')}). {S.headline(rr)}\n",
          "".join(f"\n> **Warning:** {w}\n" for w in S.warnings(rr)),
          "\nCharts: open `report.html` in this folder.\n\n",
          "## Summary\n\n", _table(["", "dense", "compressed", "change"], S.figures(rr), right=(1, 2, 3))]
    v = S.verify_line(rr)
    if v:
        md.append(f"\n{v[0].upper() + v[1:]}.\n")
    md.append(_notes(rr.notes))

    md.append("\n## Budget\n\n")
    md.append(_table(["limit", "compressed", "budget", "result"],
                     [(b.name, b.value, b.limit, ("met" if b.met else b.status)) for b in rr.budget], right=(1, 2))
              or "No budget lines in report.json.\n")

    md.append("\n## Latency per layer\n\n")
    for tl in rr.latency:
        md.append(f"\n{tl.target}: predicted from `{tl.profile}` (isolated layer timings). Sum of layers: dense "
                  f"{sum(v for v in tl.dense.values() if v):.4g} {tl.unit}, compressed "
                  f"{sum(v for v in tl.compressed.values() if v):.4g} {tl.unit}.")
        if tl.dense_total is not None:
            md.append(f" Calibrated whole-model prediction: {tl.dense_total:.4g} → {tl.compressed_total:.4g} {tl.unit}.")
        if tl.dense_measured is not None:
            md.append(f" Measured: {tl.dense_measured:.4g} → {tl.compressed_measured:.4g} ms.")
        md.append("\n")
        top = sorted(tl.compressed, key=lambda n: -(tl.dense.get(n) or 0))[:8]
        scale, unit = (1000.0, "µs") if tl.unit == "ms" else (1.0, tl.unit)
        md.append("\nThe most expensive layers of the dense model:\n\n" + _table(
            ["layer", f"dense ({unit})", f"compressed ({unit})"],
            [(n, _f(tl.dense.get(n), scale), _f(tl.compressed.get(n), scale)) for n in top], right=(1, 2)))
    md.append(_notes(rr.latency_notes))

    md.append("\n## Channels kept and precision\n\n")
    if rr.layers:
        d_out, k_out = sum(r.dense_out for r in rr.layers), sum(r.kept_out for r in rr.layers)
        cnt = Counter(r.dtype for r in rr.layers)
        md.append(f"{k_out:,} of {d_out:,} output channels kept ({k_out / max(d_out, 1):.0%}); precision: "
                  + ", ".join(f"{n} layer{'s' if n != 1 else ''} {dt}" for dt, n in cnt.most_common()) + ".\n\n")
        md.append("<details><summary>every layer</summary>\n\n" + _table(
            ["layer", "in channels", "out channels", "precision", "MACs"],
            [(r.name, f"{r.dense_in} → {r.kept_in}", f"{r.dense_out} → {r.kept_out}",
              r.dtype if r.dtype == r.dense_dtype else f"{r.dense_dtype} → {r.dtype}",
              f"{S.human(r.dense_macs)} → {S.human(r.macs)}") for r in rr.layers], right=(1, 2, 4)) + "\n</details>\n")
    md.append(_notes([rr.layers_note, fig_notes.get("channels", "")]))

    md.append("\n## Accuracy vs latency\n\n")
    md.append(_table(["model", "latency", "top-1"], [(c.label, S.latency(c.latency_ms, rr.report),
                                                     "not evaluated" if c.top1 is None else f"{c.top1:.2f}%")
                                                    for c in rr.candidates], right=(1, 2)))
    md.append(_notes(rr.candidates_notes))

    md.append(f"\n## Predicted vs measured latency ({rr.pred_target or rr.target})\n\n")
    if rr.audit:
        md.append(f"Audit of the predictor (`{rr.audit_profile}`):\n\n" + _table(["figure", "value"], S.audit_rows(rr.audit)))
    this = sorted((p for p in rr.pred_points if p.kind == "this run"), key=lambda p: "attempt" in p.label)
    if this:
        md.append("\nThis run:\n\n" + _table(["model", "predicted", "measured", "error"],
                                             [(p.label.replace("this run: ", ""), f"{p.predicted:.4g}", f"{p.measured:.4g}",
                                               f"{p.error:+.1%}") for p in this], right=(1, 2, 3)))
    md.append(_notes(rr.pred_notes))

    md.append("\n## Importance criterion\n\n")
    if rr.oracle:
        md.append(_table(["criterion", "Spearman vs oracle", "top-k overlap", "bottom-k overlap"], S.oracle_rows(rr), right=(1, 2, 3)))
        if rr.criterion:
            md.append(f"\nThis run used **{rr.criterion}**.\n")
    else:
        md.append(_notes([rr.oracle_note]))

    md.append("\n## Run details\n\n")
    md.append(_table(["", ""], S.run_rows(rr)))
    return "".join(md).rstrip() + "\n"


def _f(v: float | None, scale: float) -> str:
    return "n/a" if v is None else f"{v * scale:.3g}"
