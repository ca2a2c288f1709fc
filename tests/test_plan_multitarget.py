"""Several targets at once on real models: cpu-ort (checked-in profiles, ms) + vta-pynq (simulated cycles).

The rule (docs/plan.md, "several targets"): the channel decision is one for all
targets; each target chooses the precision of every layer from its own precisions
(cpu-ort fp32 or int8, vta-pynq int8 only); each latency limit is checked in its
target's own unit, cycles labelled simulated.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from edgeprune.config import get_target
from edgeprune.errors import BudgetMissed
from edgeprune.graph import channel_groups
from edgeprune.models import load_model
from edgeprune.plan import PlanConfig, plan
from edgeprune.profile import load_profile, profile
from edgeprune.profile.lut import shipped_profiles_dir

ROOT = Path(__file__).resolve().parents[1]


def _setup(model_name: str, tmp_path: Path):
    cpu_file = shipped_profiles_dir() / f"cpu-ort--{model_name}.json"
    assert cpu_file.exists(), f"the package ships a cpu-ort profile for {model_name}"
    model = load_model(model_name)
    example = torch.zeros(1, 3, 32, 32)
    graph = channel_groups(model, example)
    cpu, vta = get_target("cpu-ort"), get_target("vta-pynq")
    preds = {
        # the shipped tables, wherever the test runs: this tests the planner, not this machine's latency
        "cpu-ort": load_profile(cpu_file, target=cpu, allow_foreign=True).predictor(),
        # the VTA simulator is deterministic and fast: profile it here, outside the checkout
        "vta-pynq": profile(model, example, vta, model_name=model_name, out=tmp_path / "vta.json").predictor(),
    }
    gen = torch.Generator().manual_seed(0)
    scores = {g.id: torch.rand(g.size, generator=gen) for g in graph.prunable}
    return model, graph, scores, preds, [cpu, vta]


def _check(p, graph, preds):
    assert p.solver["status"] == "optimal" and p.feasible
    # one channel decision: a single set of groups, on the VTA block (16) x ORT (8) granularity
    assert p.granularity == 16
    assert all(g.kept == g.size or g.kept % 16 == 0 for g in p.groups.values())
    cpu_prec, vta_prec = p.precisions_for("cpu-ort"), p.precisions_for("vta-pynq")
    assert set(vta_prec.values()) == {"int8"}  # VTA runs everything int8
    assert set(cpu_prec.values()) <= {"fp32", "int8"} and "fp32" in cpu_prec.values()
    assert p.precisions == cpu_prec  # the single-target field is the first target's map
    assert p.targets["cpu-ort"]["unit"] == "ms" and p.targets["vta-pynq"]["unit"] == "cycles"
    assert p.targets["vta-pynq"]["simulated"] and "simulated" in p.budget_rows()[1][4]
    for t, pr in preds.items():
        sigs = graph.signatures(p.widths, p.precisions_for(t))
        assert pr.model_cost(sigs) == pytest.approx(p.targets[t]["predicted"], rel=1e-9)
        assert p.targets[t]["predicted"] <= p.targets[t]["limit"] * (1 + 1e-6)
    for name, info in p.layers.items():
        assert info["precisions"] == {"cpu-ort": cpu_prec[name], "vta-pynq": vta_prec[name]}
    again = type(p).from_json(p.to_json())
    assert again.precisions_by_target == p.precisions_by_target


def test_resnet20_cpu_ort_and_vta(tmp_path):
    model, graph, scores, preds, targets = _setup("resnet20-cifar10", tmp_path)
    p = plan(model, scores, "latency=0.7x", preds, PlanConfig(precisions=None), graph=graph, targets=targets)
    _check(p, graph, preds)
    # 0.6x is below what 16-channel VTA blocks reach on ResNet-20: a clear budget error in simulated cycles
    with pytest.raises(BudgetMissed, match=r"smallest predicted latency on vta-pynq is [0-9,]+ cycles \(simulated\)"):
        plan(model, scores, "latency=0.6x", preds, graph=graph, targets=targets)


@pytest.mark.slow
def test_resnet56_cpu_ort_and_vta(tmp_path):
    model, graph, scores, preds, targets = _setup("resnet56-cifar10", tmp_path)
    p = plan(model, scores, "latency=0.6x", preds, graph=graph, targets=targets)
    _check(p, graph, preds)
    # the `edgeprune plan --help` example: absolute limits, ms for ORT and cycles for VTA
    q = plan(model, scores, "latency@cpu-ort=1.5ms,latency@vta-pynq=600000cycles", preds, graph=graph, targets=targets)
    assert q.targets["cpu-ort"]["limit"] == 1.5 and q.targets["vta-pynq"]["limit"] == 600000
    _check(q, graph, preds)
