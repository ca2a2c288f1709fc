"""benchmarks/zoo224.py without running compress: rows read from a run's files, one-line errors, the markdown."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import zoo224


def test_one_line_error_prefers_the_cli_reason():
    text = "progress ...\nedgeprune: budget missed: latency 5 ms > 4 ms\n"
    assert zoo224.one_line_error(text, 1) == "exit 1: edgeprune: budget missed: latency 5 ms > 4 ms"
    assert zoo224.one_line_error("Traceback\n  File x\nValueError: boom\n", 1) == "exit 1: ValueError: boom"
    assert zoo224.one_line_error("", -9) == "exit -9: exit code -9"


def test_chosen_attempt_matches_objective_and_measurement():
    plan = {"objective": 2.0, "attempts": [{"objective": 1.0, "measured_ms": 3.0, "predicted_ms": 2.9},
                                           {"objective": 2.0, "measured_ms": 4.0, "predicted_ms": 3.5},
                                           {"objective": 2.0, "measured_ms": 4.4, "predicted_ms": 3.6}]}
    assert zoo224.chosen_attempt(plan, 4.05)["predicted_ms"] == 3.5
    assert zoo224.chosen_attempt({"attempts": []}, 1.0) is None


def _fake_run(tmp_path: Path) -> tuple[Path, Path]:
    out = tmp_path / "m"
    out.mkdir()
    fig = {"top1": float("nan"), "params": 100, "macs": 1000, "bytes": 400, "latency_ms": 10.0, "p10": 9.0, "p90": 11.0}
    comp = {**fig, "params": 80, "macs": 500, "latency_ms": 5.0}
    plan = {"planner": "milp", "objective": 1.0, "precisions": {"a": "int8", "b": "fp32"},
            "attempts": [{"label": "plan 1", "objective": 1.0, "predicted_ms": 5.5, "measured_ms": 5.1}]}
    (out / "report.json").write_text(json.dumps({
        "dense": fig, "compressed": comp, "plan": plan, "latency_unit": "ms", "speedup": 2.0, "budget": "latency=0.6x",
        "budget_met": True, "budget_detail": ["latency: met"], "verify": {"top1_agreement": 100.0, "max_abs_error": 1e-3,
                                                                         "images": 100, "passed": True}}))
    (out / "plan.json").write_text(json.dumps({"groups": {"g1": {"size": 8, "kept": 4}, "g2": {"size": 8, "kept": 8}}}))
    prof = tmp_path / "cpu-ort--m.json"
    prof.write_text(json.dumps({"timings_s": {"calibration": 40.0, "total_this_run": 42.0},
                                "dense_latency": {"median": 9.5},
                                "calibration": {"coef": {"layers": 1.1, "offset": -0.5},
                                                "points": [{"name": "dense", "features": {"layers": 9.0,
                                                                                          "unaligned_melems": 0.1}}]}}))
    return out, prof


def test_row_from_outputs_reads_kept_ratios_and_latencies(tmp_path):
    out, prof = _fake_run(tmp_path)
    row = zoo224.row_from_outputs("m", out, prof)
    assert row["params"]["kept"] == pytest.approx(0.8) and row["macs"]["kept"] == pytest.approx(0.5)
    assert row["groups_pruned"] == 1 and (row["int8_layers"], row["layers"]) == (1, 2)
    lat = row["latency"]
    assert lat["compressed_predicted"] == 5.5 and lat["compressed_measured"] == 5.0
    assert lat["compressed_error"] == pytest.approx(0.1)
    assert lat["dense_predicted_device_model"] == 9.0
    assert lat["dense_predicted"] == pytest.approx(1.1 * 9.0 - 0.5)
    assert row["profile"]["timings_s"]["total_this_run"] == 42.0
    assert row["budget_met"] is True and row["verify"]["top1_agreement"] == 100.0


def test_markdown_shows_a_failed_model_as_its_one_line_error(tmp_path):
    out, prof = _fake_run(tmp_path)
    good = {"model": "m", "compress_wall_s": 60.0, "groups": {"prunable": 3, "frozen": 1},
            **zoo224.row_from_outputs("m", out, prof)}
    bad = {"model": "convnext_tiny", "compress_wall_s": 5.0, "groups": {"prunable": 4, "frozen": 2},
           "error": "exit 2: edgeprune: something | broke"}
    doc = {"device_model": {"kernels": 10, "rounds": 1, "complete": True, "measure_s": 60.0, "reused": True},
           "machine": {"cpu": "x", "cores": 2, "isa": "avx2"}, "date": "d", "loadavg_start": [1, 1, 1],
           "budget": "latency=0.6x", "quick": True, "rows": [good, bad], "notes": ["a note"]}
    md = zoo224.markdown(doc)
    rows = [ln for ln in md.splitlines() if ln.startswith(("| m |", "| convnext_tiny |"))]
    assert len(rows) == 2
    assert "0.80x" in rows[0] and "0.50x" in rows[0] and "5.5 / 5" in rows[0] and "passed) | yes |" in rows[0]
    assert "error: exit 2: edgeprune: something / broke" in rows[1] and rows[1].count("|") == rows[0].count("|")
    assert "Note: a note" in md


def test_write_is_json_and_markdown(tmp_path):
    doc = {"device_model": {"kernels": 1, "rounds": 1, "complete": False}, "machine": {}, "date": "d",
           "loadavg_start": [0, 0, 0], "budget": "latency=0.6x", "quick": False, "rows": [], "partial": "0 of 6"}
    zoo224.write(doc, tmp_path / "zoo")
    assert json.loads((tmp_path / "zoo.json").read_text())["partial"] == "0 of 6"
    assert "**PARTIAL**" in (tmp_path / "zoo.md").read_text()
