"""The headline benchmark's smoke run (``--quick``) writes the file shape issue 12 fixes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_headline_quick_writes_the_fixed_shape(tmp_path):
    out = tmp_path / "results"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "headline.py"), "--model", "resnet20", "--ratio", "0.6", "--quick",
           "--out", str(out), "--cache", str(tmp_path / "cache"), "--rows", "ep-int8,tp-l1,tp-l1-int8", "--eval-limit", "200"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((out / "headline-resnet20-cpu-ort.json").read_text())
    assert set(doc) == {"dense", "rows", "machine", "versions", "protocol", "not_run", "comparison"}
    assert set(doc["dense"]) == {"top1", "latency_ms"} and doc["dense"]["latency_ms"] > 0
    assert doc["protocol"].startswith("QUICK SMOKE RUN")
    methods = [r["method"] for r in doc["rows"]]
    assert len(methods) == 3 and all(m.startswith(("edgeprune", "torch-pruning")) for m in methods)
    assert any("int8" in m for m in methods if m.startswith("edgeprune"))
    assert any("int8" in m for m in methods if m.startswith("torch-pruning"))
    for r in doc["rows"]:
        assert set(r) == {"method", "latency_ms", "latency_ratio", "top1", "params", "macs", "epochs"}
        assert isinstance(r["params"], int) and isinstance(r["macs"], int) and isinstance(r["epochs"], int)
        assert r["latency_ms"] > 0 and 0 <= r["top1"] <= 100
        assert r["latency_ratio"] == pytest.approx(r["latency_ms"] / doc["dense"]["latency_ms"], rel=1e-3)
    for ext in ("md", "png", "details.json"):
        assert (out / f"headline-resnet20-cpu-ort.{ext}").exists()


def test_recover_speed_writes_per_device_rows(tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "recover_speed.py"), "--images", "256", "--repeats", "1",
           "--out", str(tmp_path / "rs.json")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((tmp_path / "rs.json").read_text())
    import torch

    devices = {"cpu", "cuda"} if torch.cuda.is_available() else {"cpu"}
    assert {(r["model"], r["device"]) for r in doc["rows"]} == {(m, d) for m in ("resnet20-cifar10", "resnet56-cifar10")
                                                                   for d in devices}
    assert all(r["images_per_s"] > 0 and 0 <= r["data_wait_fraction"] < 1 for r in doc["rows"])
    assert doc["machine"] and doc["versions"]["torch"]


def test_selection_walks_tp_ratios_up_and_edgeprune_macs_down():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from headline import selection_order

    # Torch-Pruning at ratio 0.55 has more MACs than at 0.4 on ResNet-56: the search still tries 0.4 first
    tp = {"tp-l1@0.4": {"knob": 0.4, "search_ratio": 0.47}, "tp-l1@0.55": {"knob": 0.55, "search_ratio": 0.49},
          "tp-l1@0.1": {"knob": 0.1, "search_ratio": 0.94}}
    assert selection_order("tp-l1", tp, {"tp-l1@0.4": 31, "tp-l1@0.55": 51, "tp-l1@0.1": 65}) == \
        ["tp-l1@0.1", "tp-l1@0.4", "tp-l1@0.55"]
    ep = {"a": {"knob": 1.0, "search_ratio": 0.5}, "b": {"knob": -1.0, "search_ratio": 0.45}, "c": {"knob": 0.9, "search_ratio": 0.4}}
    assert selection_order("ep-int8", ep, {"a": 100, "b": 100, "c": 80}) == ["b", "a", "c"]
