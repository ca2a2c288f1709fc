"""The HTML/Markdown report: every section and chart of a tiny run, graceful degradation, and the CLI."""
from __future__ import annotations

import base64
import json
import re
import time
from pathlib import Path

import pytest
import torch

from edgeprune.cli import main
from edgeprune.errors import BadInput
from edgeprune.report import SECTION_IDS, write_report
from tests.tiny import tiny_net

EXAMPLE = (1, 3, 16, 16)
PNG = b"\x89PNG\r\n\x1a\n"


def _profile(path: Path, sigs: list) -> Path:
    """A tiny complete profile priced by MACs, with an audit, for the signatures given (fp32 and int8)."""
    records = {}
    for s in sigs:
        for dt, k in (("fp32", 1.0), ("int8", 0.6)):
            s2 = s.with_channels(s.in_channels, s.out_channels, dt)
            records[s2.key()] = {"signature": s2.to_dict(), "median": k * (0.002 + 1e-8 * s2.macs), "p10": 0.0, "p90": 0.0,
                                 "count": 10, "unit": "ms", "layout": "nchwc"}
    configs = [{"name": f"audit{i:03d}-{'aligned' if i % 2 else 'unaligned'}", "aligned": bool(i % 2), "widths": {},
                "predicted": 0.02 + 0.004 * i, "measured": (0.02 + 0.004 * i) * (1 + 0.03 * (-1) ** i * (i % 3))}
               for i in range(8)]
    doc = {
        "schema": "edgeprune.profile", "schema_version": 1, "complete": True, "unit": "ms", "model": "tiny",
        "target": {"name": "cpu-ort", "backend": "ort", "channel_multiple": 8},
        "records": records,
        "calibration": {"coef": {"scale": 1.1, "offset": 0.01}},
        "audit": {"n": 8, "median_abs_error": 0.03, "within_5pct": 0.75, "within_10pct": 1.0, "max_abs_error": 0.06,
                  "aligned": {"n": 4, "median_abs_error": 0.03, "within_5pct": 0.75},
                  "unaligned": {"n": 4, "median_abs_error": 0.03, "within_5pct": 0.75},
                  "test_retest": {"median_spread": 0.02, "within_5pct": 0.9},
                  "relative_to_dense": {"median_abs_error": 0.02, "within_5pct": 0.9},
                  "macs_baseline": {"median_abs_error": 0.2, "within_5pct": 0.1, "within_10pct": 0.3},
                  "dense": {"predicted": 0.05, "measured": {"median": 0.052}}, "configs": configs},
    }
    path.write_text(json.dumps(doc))
    return path


def make_run(root: Path, budget_met: bool = True) -> Path:
    """A compress run folder like the pipeline writes, without the minutes of fine-tuning and timing."""
    from edgeprune.graph import channel_groups
    from edgeprune.prune import prune

    run = root / "run"
    run.mkdir(parents=True)
    dense = tiny_net()
    ex = torch.zeros(*EXAMPLE)
    graph = channel_groups(dense, ex)
    keep = {g.id: list(range(g.size // 2)) for g in graph.prunable}
    small = prune(dense, keep, ex)
    torch.save(small, run / "model.pt")
    counts = {g.id: len(keep[g.id]) for g in graph.prunable}
    sigs = list(graph.signatures().values()) + list(graph.signatures(counts).values())
    prof = _profile(root / "cpu-ort--tiny.json", sigs)
    (run / "manifest.json").write_text(json.dumps({"target": "cpu-ort", "input_shape": list(EXAMPLE)}))
    plan = {"planner": "milp", "keep": keep, "precisions": {"conv2": "int8", "conv3": "int8"},
            "limits": {"latency_ms": 0.06}, "profile": str(prof),
            "attempts": [{"scale": 0.95, "predicted_ms": 0.045, "measured_ms": 0.062},
                         {"scale": 0.9, "predicted_ms": 0.041, "measured_ms": 0.048}]}
    (run / "plan.json").write_text(json.dumps(plan))
    fig = {"params": 38698, "macs": 6120064, "bytes": 154792}
    report = {
        "schema": 1, "model": "tests.tiny:tiny_net", "target": "cpu-ort", "budget": "latency=0.6x",
        "budget_met": budget_met,
        "budget_detail": ["latency on cpu-ort: 0.048 ms <= 0.06 ms: met" if budget_met else
                          "latency on cpu-ort: 0.07 ms <= 0.06 ms: MISSED by 0.01 ms (16.7%)"],
        "dense": {**fig, "top1": 91.0, "latency_ms": 0.1, "latency_p10_ms": 0.09, "latency_p90_ms": 0.11},
        "compressed": {"params": 11386, "macs": 1659280, "bytes": 45544, "top1": 89.5, "latency_ms": 0.048,
                       "latency_p10_ms": 0.046, "latency_p90_ms": 0.05},
        "speedup": 0.1 / 0.048, "top1_drop": 1.5,
        "verify": {"images": 60, "top1_agreement": 100.0, "max_abs_error": 5e-8, "passed": True},
        "config": {"criterion": "taylor", "planner": "milp", "epochs": 0.2, "margin": 0.95},
        "candidates": [{"label": "ratio 0.7", "latency_ms": 0.07, "top1": 90.2}, {"label": "ratio 0.4", "latency_ms": 0.04}],
        "oracle": {"grades": [{"criterion": "taylor", "spearman": 0.71, "topk_overlap": 0.6, "bottomk_overlap": 0.5},
                              {"criterion": "l1", "spearman": 0.42, "topk_overlap": 0.4, "bottomk_overlap": 0.3}]},
        "data": "tiny", "eval_images": 60, "machine": {"cpu": "test cpu", "cores": 2}, "versions": {"torch": torch.__version__},
        "wall_s": 12.0,
    }
    (run / "report.json").write_text(json.dumps(report))
    return run


def _images(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def test_report_has_every_section_and_chart(tmp_path) -> None:
    run = make_run(tmp_path)
    t0 = time.perf_counter()
    html_path, md_path = write_report(run)
    assert time.perf_counter() - t0 < 60
    html = html_path.read_text()
    for sid in SECTION_IDS:
        assert f'<section id="{sid}">' in html, sid
    imgs = _images(html)
    # per-layer latency, channels kept, precision strip, Pareto, predicted vs measured
    assert len(imgs) == 5 and all(i.startswith(PNG) and len(i) > 5000 for i in imgs)
    for alt in ("per-layer latency on cpu-ort", "channels kept per layer", "precision per layer",
                "accuracy vs latency", "predicted vs measured latency"):
        assert f'alt="{alt}"' in html, alt
    # self-contained: no external resource, no script
    assert not re.search(r'(src|href)="(https?:)?//', html) and "<script" not in html
    assert "Budget met" in html and "2.08×" in html and "int8" in html
    assert "0.71" in html and 'class="hl"' in html  # the run's criterion is highlighted among the oracle grades
    assert "<div class=\"note\">" not in html.split('id="latency"')[1].split("</section>")[0]  # nothing missing there
    md = md_path.read_text()
    for head in ("## Summary", "## Budget", "## Latency per layer", "## Channels kept", "## Accuracy vs latency",
                 "## Predicted vs measured", "## Importance criterion", "## Run details"):
        assert head in md, head
    assert "| latency on cpu-ort | 0.048 ms | 0.06 ms | met |" in md


def test_report_degrades_to_notes(tmp_path, monkeypatch) -> None:
    """Only report.json: every section is still there, with a note instead of the chart."""
    monkeypatch.setenv("EDGEPRUNE_CACHE_DIR", str(tmp_path / "cache"))  # not a profile another test left in the cache
    run = tmp_path / "bare"
    run.mkdir()
    full = make_run(tmp_path)
    rep = json.loads((full / "report.json").read_text())
    for k in ("candidates", "oracle"):
        rep.pop(k)
    rep["budget_met"] = False
    rep["compressed"]["top1"] = 40.0
    (run / "report.json").write_text(json.dumps(rep))
    html_path, md_path = write_report(run)
    html = html_path.read_text()
    for sid in SECTION_IDS:
        assert f'<section id="{sid}">' in html, sid
    assert len(_images(html)) == 1  # the Pareto plot needs only report.json
    assert "Budget missed" in html and "Top-1 fell by 51.0 points" in html
    assert "no model.pt" in html and "oracle check" in html and "no latency profile" in html
    assert "Budget MISSED" in md_path.read_text()


def test_report_without_profile_says_so(tmp_path) -> None:
    run = make_run(tmp_path)
    plan = json.loads((run / "plan.json").read_text())
    plan["profile"] = str(tmp_path / "missing.json")
    (run / "plan.json").write_text(json.dumps(plan))
    html = write_report(run)[0].read_text()
    assert "no latency profile" in html and 'alt="per-layer latency on cpu-ort"' not in html
    assert 'alt="channels kept per layer"' in html


@pytest.mark.parametrize("content", [None, "{not json", "[1, 2]"])
def test_bad_run_folder_is_one_line_exit_2(tmp_path, capsys, content) -> None:
    run = tmp_path / "r"
    if content is not None:
        run.mkdir()
        (run / "report.json").write_text(content)
    with pytest.raises(BadInput):
        write_report(run)
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("edgeprune: ") and "\n" not in err


def test_cli_report_json(tmp_path, capsys) -> None:
    run = make_run(tmp_path)
    assert main(["report", str(run), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert Path(out["html"]).exists() and Path(out["markdown"]).exists()
