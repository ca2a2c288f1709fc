"""End to end on a tiny model: real pruning, a real ONNX Runtime engine, checked against PyTorch."""
from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from edgeprune.errors import BadInput, BudgetMissed
from edgeprune.metrics import count_params
from edgeprune.pipeline import CompressConfig, compress
from edgeprune.profile.timing import TimingProtocol
from tests.tiny import tiny_net, tiny_npz

QUICK = CompressConfig(planner="uniform", epochs=0.5, batch_size=32, protocol=TimingProtocol.quick(), final_repeats=1)


def test_compress_tiny_end_to_end(tmp_path) -> None:
    data = tiny_npz(tmp_path / "d.npz", n=400)
    # a MACs budget is deterministic, so the test cannot be flipped by a noisy machine
    res = compress(tiny_net(), data, "cpu-ort", "macs=0.5x", out=tmp_path / "run", config=QUICK)
    assert res.budget_met and res.compressed.macs <= 0.5 * res.dense.macs
    assert count_params(res.model) < count_params(tiny_net())
    assert res.verify["top1_agreement"] >= 99.0 and res.verify["max_abs_error"] < 1e-3
    for name in ("model.onnx", "model.pt", "plan.json", "report.json", "manifest.json"):
        assert (tmp_path / "run" / name).exists(), name
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["budget_met"] and report["compressed"]["params"] < report["dense"]["params"]
    # the ONNX engine really is smaller: its conv weights have fewer output channels
    g = onnx.load(str(tmp_path / "run" / "model.onnx")).graph
    sizes = {i.name: list(i.dims) for i in g.initializer}
    assert min(d[0] for d in sizes.values() if len(d) == 4) < 32


def test_impossible_budget_says_by_how_much(tmp_path) -> None:
    data = tiny_npz(tmp_path / "d.npz", n=100)
    with pytest.raises(BudgetMissed, match="budget is"):
        compress(tiny_net(), data, "cpu-ort", "macs=0.001x", out=tmp_path / "run", config=QUICK)


def test_resume_reuses_checkpoints(tmp_path) -> None:
    data = tiny_npz(tmp_path / "d.npz", n=200)
    cfg = QUICK
    first = compress(tiny_net(), data, "cpu-ort", "macs=0.6x", out=tmp_path / "run", config=cfg)
    plan1 = (tmp_path / "run" / "state" / "plan.json").read_text()
    from dataclasses import replace

    second = compress(tiny_net(), data, "cpu-ort", "macs=0.6x", out=tmp_path / "run", config=replace(cfg, resume=True))
    assert (tmp_path / "run" / "state" / "plan.json").read_text() == plan1
    assert second.compressed.params == first.compressed.params


def test_same_seed_same_plan_and_weights(tmp_path) -> None:
    """Determinism: with a fixed seed (and a budget that does not depend on timing) two runs agree exactly."""
    import torch

    data = tiny_npz(tmp_path / "d.npz", n=200)
    runs = [compress(tiny_net(), data, "cpu-ort", "macs=0.6x", out=tmp_path / f"run{i}", config=QUICK) for i in range(2)]
    plans = [json.loads((tmp_path / f"run{i}" / "plan.json").read_text())["keep"] for i in range(2)]
    assert plans[0] == plans[1]
    a, b = (r.model.state_dict() for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_milp_planner_falls_back_to_fp32_when_every_int8_plan_misses(monkeypatch) -> None:
    """The int8 tables can promise what the int8 kernels do not deliver (a per-op floor): when every mixed and
    all-int8 plan misses on measurement, compress also plans fp32 only and ships that plan if it fits."""
    import torch

    from edgeprune.backends import get_backend
    from edgeprune.budget import Budget
    from edgeprune.config import get_target
    from edgeprune.graph import channel_groups
    from edgeprune.models import load_model
    from edgeprune.pipeline import search
    from edgeprune.pipeline.context import Run
    from edgeprune.pipeline.run import resolve_budget
    from edgeprune.ui import QUIET

    model = load_model("resnet20-cifar10").eval()
    example = torch.zeros(1, 3, 32, 32)
    tgt = get_target("cpu-ort")
    measured: list[int] = []

    def fake_cost(run, keep, precisions=None, reference=None):
        n8 = sum(v == "int8" for v in (precisions or {}).values())
        measured.append(n8)  # "measured": any int8 layer -> 0.9 ms (misses the 0.7 ms limit), fp32 -> 0.6 ms (fits)
        return {"latency": 0.9 if n8 else 0.6}

    # the shipped ResNet-20 tables wherever the test runs (the planner's logic is under test, not this machine)
    monkeypatch.setenv("EDGEPRUNE_ALLOW_FOREIGN_PROFILE", "1")
    monkeypatch.setattr(search, "candidate_cost", fake_cost)
    run = Run("resnet20-cifar10", model, None, example, tgt, get_backend(tgt.backend), Budget.parse("latency=0.7ms"),
              CompressConfig(max_attempts=2), QUIET, Path("unused"), dense_latency=1.0)
    run.graph = channel_groups(model, example)
    run.scores = {g.id: torch.rand(g.size, generator=torch.Generator().manual_seed(0)) for g in run.graph.prunable}
    resolve_budget(run)
    doc = search.plan_milp(run)
    assert any(measured[:-1]) and measured[-1] == 0
    assert set(doc["precisions"].values()) == {"fp32"} and doc["measured"]["latency"] == 0.6
    assert doc["attempts"][-1]["label"].endswith("(fp32 only)")


def test_compress_vta_with_a_cycles_budget(tmp_path) -> None:
    """vta-pynq: whole-build simulated cycles, a cycles budget, an int8 engine verified against PyTorch, and
    every output says the latency is simulated."""
    from edgeprune.profile.timing import TimingProtocol

    cfg = CompressConfig(criterion="l1", epochs=0, eval_limit=100, protocol=TimingProtocol.quick(), final_repeats=1,
                         profiles=str(tmp_path / "profiles"))
    res = compress("resnet20-cifar10", "cifar10-demo", "vta-pynq", "latency=250kcycles", out=tmp_path / "run", config=cfg)
    assert res.budget_met and res.compressed.latency_ms <= 250_000 < res.dense.latency_ms
    assert res.compressed.latency_unit == "cycles" and res.compressed.simulated and res.verify["passed"]
    rep = json.loads((tmp_path / "run" / "report.json").read_text())
    assert rep["latency_unit"] == "cycles" and rep["simulated"] is True
    assert "cycles (simulated)" in rep["budget_detail"][0] and set(rep["stage_seconds"]) >= {"plan", "verify"}
    est = rep["time_estimate"]  # what the run announced, beside what it took
    assert est["estimated_s"] > 0 and est["ratio"] == pytest.approx(rep["wall_s"] / est["estimated_s"], rel=0.01)
    assert (tmp_path / "run" / "vta" / "program.bin").exists()
    assert "cycles (simulated)" in (tmp_path / "run" / "report.md").read_text()
    assert any("cycles (simulated)" in str(row[0]) for row in res.table_rows())


def test_bad_arguments_fail_before_any_work(tmp_path) -> None:
    """--data none with a criterion that needs data fails before the dense measurement: no state/ is left."""
    with pytest.raises(BadInput, match="needs data"):
        compress("resnet20-cifar10", None, "cpu-ort", "latency=0.6x", out=tmp_path / "run",
                 config=CompressConfig(criterion="fisher"), input_shape=(1, 3, 32, 32))
    with pytest.raises(BadInput, match="names target"):
        compress("resnet20-cifar10", None, "cpu-ort", "latency@vta-pynq=0.5x", out=tmp_path / "run",
                 config=CompressConfig(criterion="l1"), input_shape=(1, 3, 32, 32))
    assert not (tmp_path / "run").exists()
