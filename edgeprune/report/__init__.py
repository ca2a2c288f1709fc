"""Reports people want to look at: one self-contained ``report.html`` and a ``report.md`` per run.

    from edgeprune.report import write_report
    html_path, md_path = write_report("build/demo")      # reads report.json, plan.json, model.pt, the profile

Only ``report.json`` is required; every missing piece becomes a note in the
report, never an error. Charts use matplotlib (Agg backend, imported lazily);
without matplotlib the report is written without charts. Sections:
docs/report.md.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["SECTION_IDS", "build_figures", "write_report"]

SECTION_IDS = ("summary", "budget", "latency", "channels", "precision", "pareto", "predictor", "importance", "run")


def build_figures(rr) -> tuple[dict[str, bytes | None], dict[str, str]]:
    """Every chart of the report as PNG bytes, and a note per chart that could not be drawn."""
    figs: dict[str, bytes | None] = {}
    notes: dict[str, str] = {}
    try:
        from edgeprune.report import plots
    except ImportError as err:  # pragma: no cover - matplotlib is a base dependency
        return figs, {k: f"charts need matplotlib ({err})" for k in ("channels", "precision", "pareto", "predictor")}

    def draw(key: str, fn, *args) -> None:
        try:
            figs[key] = fn(*args)
        except ImportError as err:
            notes[key] = f"charts need matplotlib: {err}"
        except Exception as err:  # noqa: BLE001 - a chart must never stop the report
            from edgeprune.errors import first_line

            notes[key] = f"this chart could not be drawn ({type(err).__name__}: {first_line(err)})"

    if rr.layers:
        for tl in rr.latency:
            draw(f"latency:{tl.target}", plots.layer_latency, tl, rr.layers)
        draw("channels", plots.channels, rr.layers)
        draw("precision", plots.bitwidths, rr.layers)
    if rr.candidates:
        from edgeprune.report.summary import latency_limit, latency_unit

        draw("pareto", plots.pareto, rr.candidates, latency_limit(rr), latency_unit(rr.report))
    else:
        notes["pareto"] = "report.json has no measured latency for the dense or compressed model"
    if rr.pred_points:
        draw("predictor", plots.predictor, rr.pred_points, rr.pred_unit, rr.audit)
    return figs, notes


def write_report(run_dir: str | Path, profile: str | Path | None = None) -> tuple[Path, Path]:
    """Write ``report.html`` and ``report.md`` into ``run_dir`` (a ``compress`` output folder).

    ``profile`` overrides the latency profile (default: plan.json's ``profile``,
    else the one :func:`~edgeprune.profile.lut.find_profile` finds). Raises
    :class:`~edgeprune.errors.BadInput` when ``run_dir`` is missing or has no
    readable report.json.
    """
    from edgeprune.fileio import write_text
    from edgeprune.report import html, markdown
    from edgeprune.report.data import load_run

    rr = load_run(run_dir, profile=profile)
    figs, notes = build_figures(rr)
    run = Path(run_dir)
    html_path = write_text(run / "report.html", html.render(rr, figs, notes))
    md_path = write_text(run / "report.md", markdown.render(rr, notes))
    return html_path, md_path
