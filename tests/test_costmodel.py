"""The device cost model: file round-trip and refusals, resumable build, exactness, monotonicity, same plan as a table."""
from __future__ import annotations

import itertools
import json

import pytest

from edgeprune.config import get_target
from edgeprune.costmodel import (
    BuildConfig,
    DeviceModel,
    DevicePredictor,
    FitConfig,
    build_device_model,
    load_device_model,
    split_kernels,
)
from edgeprune.costmodel.model import new_document
from edgeprune.costmodel.space import FEATURES, SpaceConfig, features
from edgeprune.errors import BadInput
from edgeprune.graph.signature import LayerSignature
from edgeprune.profile.timing import Timing

FAST_FIT = FitConfig(max_iter=25)
SMALL = SpaceConfig(sizes=(4, 8, 16), max_channels=64)


def fake_cost(sig: LayerSignature) -> float:
    """A deterministic latency: monotone in channels within an alignment class, unaligned 1.7x per MAC."""
    f = dict(zip(FEATURES, features(sig, 8)))
    v = 0.01 + f["macs"] / 2e8 * (1.0 if f["in_aligned"] and f["out_aligned"] else 1.7) + f["bytes"] / 5e8
    return v * (0.6 if sig.dtype == "int8" else 1.0)


def fake_time(sig: LayerSignature) -> tuple[Timing, dict]:
    v = fake_cost(sig)
    return Timing(v, v, v, 1), {}


def _build(path, n=60, time_fn=fake_time, resume=False):
    return build_device_model("cpu-ort", out=path, resume=resume, config=BuildConfig(max_samples=n, budget_s=600),
                              space=SMALL, fit=FAST_FIT, time_fn=time_fn)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    path = tmp_path_factory.mktemp("dm") / "cpu-ort.device.json"
    return _build(path)


def test_round_trip(built):
    assert built.complete and len(built.samples) >= 50
    dm = load_device_model(built.path, target="cpu-ort")
    assert dm.samples == json.loads(json.dumps(built.samples)) and dm.data["fingerprint"] == json.loads(json.dumps(built.data["fingerprint"]))
    sig = LayerSignature.from_dict(next(iter(dm.samples.values()))["signature"])
    assert DevicePredictor(dm).layer_cost(sig) == pytest.approx(DevicePredictor(built).layer_cost(sig))
    assert {"cpu", "isa", "threads", "runtime"} <= set(dm.data["fingerprint"])


def test_wrong_schema_refused(built, tmp_path):
    doc = json.loads(built.path.read_text())
    doc["schema_version"] = 99
    p = tmp_path / "old.json"
    p.write_text(json.dumps(doc))
    with pytest.raises(BadInput, match="schema version 99") as e:
        load_device_model(p)
    assert "\n" not in str(e.value)
    p.write_text(json.dumps({"schema": "something.else"}))
    with pytest.raises(BadInput, match="not an edgeprune device model"):
        load_device_model(p)


def test_foreign_fingerprint_refused(built, tmp_path):
    doc = json.loads(built.path.read_text())
    doc["fingerprint"]["cpu"] = "Some Other CPU 9000"
    p = tmp_path / "foreign.json"
    p.write_text(json.dumps(doc))
    with pytest.raises(BadInput) as e:
        load_device_model(p, target="cpu-ort")
    msg = str(e.value)
    assert "\n" not in msg and "Some Other CPU 9000" in msg and "edgeprune profile --target cpu-ort --fresh" in msg
    with pytest.raises(BadInput, match="another device"):  # resuming a foreign build is refused too
        _build(p, resume=True)


def test_interrupted_build_resumes(built, tmp_path):
    calls = []

    def dying(sig):
        calls.append(sig.key())
        if len(calls) == 25:
            raise KeyboardInterrupt
        return fake_time(sig)

    path = tmp_path / "dm.json"
    with pytest.raises(KeyboardInterrupt):
        _build(path, time_fn=dying)
    partial = load_device_model(path, allow_incomplete=True)
    assert not partial.complete and len(partial.samples) == 24
    with pytest.raises(BadInput, match="incomplete"):
        load_device_model(path)
    again = []
    dm = _build(path, time_fn=lambda s: (again.append(s.key()), fake_time(s))[1], resume=True)
    assert dm.complete
    assert not set(again) & set(partial.samples)  # nothing measured twice
    assert set(dm.samples) == set(built.samples)  # the same samples as an uninterrupted build


def test_exact_at_measured_points(built):
    pred = DevicePredictor(built)
    for rec in list(built.samples.values()):
        sig = LayerSignature.from_dict(rec["signature"])
        assert pred.kernel_cost(sig) == pytest.approx(rec["median"], rel=1e-9)


def test_monotone_in_channels_within_kernel_type(built):
    pred = DevicePredictor(built)
    # a shape with measured samples (the clamp is active) and a fresh one (regressor only)
    measured = [LayerSignature.from_dict(r["signature"]) for r in built.samples.values()]
    conv = next(s for s in measured if s.op == "conv2d" and s.groups == 1 and s.dtype == "fp32")
    fresh = LayerSignature("conv2d", 8, 8, (3, 3), (1, 1), (1, 1), 1, (16, 16), "fp32", "bn+relu")
    for base in (conv, fresh):
        for aligned in (True, False):
            cs = [c for c in range(1, 65) if (c % 8 == 0) == aligned]
            for fixed in (8, 24, 63):
                row = [pred.layer_cost(base.with_channels(c, fixed)) for c in cs]
                col = [pred.layer_cost(base.with_channels(fixed, c)) for c in cs]
                assert all(b >= a - 1e-12 for a, b in itertools.pairwise(row)), (base.key(), aligned, "c_in")
                assert all(b >= a - 1e-12 for a, b in itertools.pairwise(col)), (base.key(), aligned, "c_out")
    dw = LayerSignature("conv2d", 8, 8, (3, 3), (1, 1), (1, 1), -1, (16, 16), "fp32", "bn+relu")
    vals = [pred.layer_cost(dw.with_channels(c, c)) for c in range(8, 65, 8)]
    assert all(b >= a for a, b in itertools.pairwise(vals))


def test_fusion_rule_splits_unfused_ops():
    sig = LayerSignature("conv2d", 16, 16, (3, 3), (1, 1), (1, 1), 1, (8, 8), "fp32", "bn+add+relu")
    assert split_kernels(sig, "ort") == [sig]
    parts = split_kernels(sig, "unknown-backend")
    assert [p.op for p in parts] == ["conv2d", "add", "act"] and parts[0].post == "bn"


def test_same_plan_as_exhaustive_table():
    """The MILP picks the same plan from the device predictor as from an exhaustive table of the same numbers."""
    import torch

    from edgeprune.graph import channel_groups
    from edgeprune.plan import PlanConfig, plan
    from edgeprune.profile.lut import Predictor
    from tests.test_plan import Chain

    model = Chain((12, 10, 9)).eval()
    graph = channel_groups(model, torch.randn(1, 3, 8, 8))
    target = get_target("cpu-ort")
    table = Predictor("ms", 8)
    doc = new_document(target, "ms", {}, SMALL, FAST_FIT, {})
    for info in graph.layers.values():
        s = info.signature
        for dtype in target.precisions:
            for ci in range(1, s.in_channels + 1):
                for co in range(1, s.out_channels + 1):
                    q = s.with_channels(ci, co, dtype)
                    v = fake_cost(q)
                    table.add(q, v)
                    doc["samples"][q.key()] = {"signature": q.to_dict(), "median": v, "p10": v, "p90": v, "count": 1}
    doc["complete"] = True
    device = DevicePredictor(DeviceModel(doc))
    scores = {g.id: torch.linspace(1.0, 2.0, g.size) for g in graph.prunable}
    for budget in ("latency=0.85x", "latency=0.7x"):
        a = plan(model, scores, budget, {"cpu-ort": table}, PlanConfig(granularity=1), graph=graph)
        b = plan(model, scores, budget, {"cpu-ort": device}, PlanConfig(granularity=1), graph=graph)
        assert a.to_dict()["groups"] == b.to_dict()["groups"]


def test_cli_builds_a_device_model_without_model(tmp_path, monkeypatch, capsys):
    """`edgeprune profile --target T` with no --model measures kernels (real ORT, tiny budget) into TARGET.device.json."""
    from edgeprune.cli import main
    from edgeprune.costmodel import device_model_path

    monkeypatch.setenv("EDGEPRUNE_CACHE_DIR", str(tmp_path))
    code = main(["profile", "--target", "cpu-ort", "--samples", "10", "--budget-min", "0.5", "--quick", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["samples"] >= 10 and out["path"] == str(device_model_path("cpu-ort"))
    dm = load_device_model(out["path"], target="cpu-ort", allow_incomplete=True)
    assert {LayerSignature.from_dict(r["signature"]).dtype for r in dm.samples.values()} == {"fp32", "int8"}
