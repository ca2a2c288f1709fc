"""Latency profiler, profile files and predictor (issue 6), on a small model with quick protocols."""
from __future__ import annotations

import itertools
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgeprune.errors import BadInput
from edgeprune.graph.signature import LayerSignature
from edgeprune.profile import (
    ModelProtocol,
    Predictor,
    TimingProtocol,
    aligned_grid,
    default_profile_path,
    load_profile,
    profile,
    unaligned_grid,
)

QUICK = {"protocol": TimingProtocol.quick(), "model_protocol": ModelProtocol.quick()}


class Small(nn.Module):
    """conv-bn-relu, one residual block, pool, linear: three groups, five layer shapes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.conv3 = nn.Conv2d(16, 16, 3, 1, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(out)))
        out = F.relu(self.bn3(self.conv3(y)) + out)
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


EXAMPLE = torch.zeros(1, 3, 12, 12)


@pytest.fixture(scope="module")
def small_profile(tmp_path_factory):
    path = tmp_path_factory.mktemp("prof") / "cpu-ort--small.json"
    prof = profile(Small().eval(), EXAMPLE, "cpu-ort", model_name="small", out=path, resume=False,
                   audit=2, calibration=2, **QUICK)
    return prof


def test_grid_policy():
    assert aligned_grid(64, 8) == [8, 16, 32, 40, 48, 56, 64]
    assert aligned_grid(16, 8) == [8, 16]
    assert aligned_grid(100, 8)[-1] == 100
    assert unaligned_grid([8, 16], 8) == [7, 15]
    assert aligned_grid(4, 8) == [4]


def test_profile_runs_and_round_trips(small_profile):
    prof = small_profile
    assert prof.complete and prof.path.exists()
    assert prof.unit == "ms"
    assert "fp32" in prof.precisions
    assert prof.dense_latency is not None and prof.dense_latency.median > 0
    assert prof.audit is not None and prof.audit["n"] == 2
    for k in ("median_abs_error", "within_5pct", "within_10pct", "test_retest"):
        assert k in prof.audit
    loaded = load_profile(prof.path, target="cpu-ort")
    assert loaded.records == json.loads(json.dumps(prof.records))
    assert loaded.data["calibration"]["coef"] == prof.data["calibration"]["coef"]
    assert loaded.data["software"]["onnxruntime"]
    assert loaded.data["cpu"]
    # the model's own layers are all priced
    from edgeprune.graph import channel_groups

    graph = channel_groups(Small().eval(), EXAMPLE)
    pred = loaded.predictor()
    assert pred.unit == "ms"
    assert pred.model_cost(graph.signatures()) > 0


def test_int8_term_is_fitted_on_whole_int8_models(small_profile):
    """The int8 scale reproduces the median all-int8 model and is applied to int8 layers only."""
    from edgeprune.graph import channel_groups
    from edgeprune.profile.lut import Predictor

    cal = small_profile.data["calibration"]
    rows8 = cal["int8_points"]
    assert [r["name"] for r in rows8] == ["dense", "cal0-aligned", "cal1-unaligned"]  # dense + min(3, calibration=2)
    s8 = cal["coef"]["int8_scale"]
    assert 0.2 <= s8 <= 2.0
    errors = sorted(abs(r["error_in_sample"]) for r in rows8)
    assert s8 in (0.2, 2.0) or errors[0] < 1e-9, (s8, errors)  # unless clipped, the median-scale point is met exactly
    graph = channel_groups(Small().eval(), EXAMPLE)
    pred = small_profile.predictor()
    fp32, int8 = graph.signatures(), graph.signatures({}, {n: "int8" for n in graph.layers})
    assert pred.model_cost(int8) == pytest.approx(rows8[0]["predicted"])
    # without the term (scale 1) int8 layers cost their table entries; fp32 models are unaffected
    raw = Predictor.from_profile(small_profile)
    raw.calibration = {**raw.calibration, "coef": {k: v for k, v in cal["coef"].items() if k != "int8_scale"}}
    assert raw.model_cost(fp32) == pytest.approx(pred.model_cost(fp32))
    assert raw.features(int8)["layers"] * s8 == pytest.approx(pred.features(int8)["layers"])


def test_predictor_exact_at_measured_points(small_profile):
    pred = small_profile.predictor()
    for rec in small_profile.records.values():
        sig = LayerSignature.from_dict(rec["signature"])
        assert pred.layer_cost(sig) == pytest.approx(rec["median"])


def test_wrong_schema_version_fails_clearly(small_profile, tmp_path):
    doc = json.loads(small_profile.path.read_text())
    doc["schema_version"] = 999
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(BadInput, match="schema version 999"):
        load_profile(bad)


def test_bad_files_fail_clearly(small_profile, tmp_path):
    with pytest.raises(BadInput, match="not found"):
        load_profile(tmp_path / "missing.json")
    trunc = tmp_path / "trunc.json"
    trunc.write_text(small_profile.path.read_text()[:200])
    with pytest.raises(BadInput, match="malformed"):
        load_profile(trunc)
    with pytest.raises(BadInput, match="measured on target 'cpu-ort'"):
        load_profile(small_profile.path, target="vta-pynq")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"hello": 1}))
    with pytest.raises(BadInput, match="not an edgeprune profile"):
        load_profile(other)


def test_resume_after_interruption(small_profile, tmp_path):
    path = tmp_path / "resume.json"

    class Boom(RuntimeError):
        pass

    def stop_after(k):
        def hook(i):
            if i == k:
                raise Boom()
        return hook

    kw = {"model_name": "small", "out": path, "calibration": 0, "audit": 0, **QUICK}
    with pytest.raises(Boom):
        profile(Small().eval(), EXAMPLE, "cpu-ort", resume=False, _on_record=stop_after(3), **kw)
    partial = json.loads(path.read_text())
    assert len(partial["records"]) == 3 and partial["complete"] is False
    with pytest.raises(BadInput, match="incomplete"):
        load_profile(path)
    seen = []
    prof = profile(Small().eval(), EXAMPLE, "cpu-ort", resume=True, _on_record=seen.append, **kw)
    assert len(seen) == len(small_profile.records) - 3  # only the missing records were measured
    assert set(prof.records) == set(small_profile.records)
    assert load_profile(path).complete


def test_recalibrate_keeps_the_tables_and_measures_the_model_term_again(small_profile, tmp_path):
    import shutil

    path = tmp_path / "recal.json"
    shutil.copy(small_profile.path, path)
    doc = json.loads(path.read_text())
    doc["calibration"]["coef"] = {"layers": 9.0, "offset": 0.0}  # a stale fit that must go
    path.write_text(json.dumps(doc))
    seen = []
    prof = profile(Small().eval(), EXAMPLE, "cpu-ort", model_name="small", out=path, calibration=2, audit=2,
                   recalibrate=True, _on_record=seen.append, **QUICK)
    assert seen == [] and prof.records == json.loads(json.dumps(small_profile.records))  # no layer measured again
    assert prof.data["calibration"]["coef"]["layers"] != 9.0 and "int8_scale" in prof.data["calibration"]["coef"]
    assert prof.complete and prof.audit["n"] == 2
    with pytest.raises(BadInput, match="needs an existing profile"):
        profile(Small().eval(), EXAMPLE, "cpu-ort", model_name="small", out=tmp_path / "none.json", recalibrate=True, **QUICK)


def test_predictor_monotone_where_the_table_is():
    pred = Predictor("ms", multiple=8)
    base = LayerSignature("conv2d", 8, 8, (3, 3), (1, 1), (1, 1), 1, (16, 16), "fp32", "bn+relu")
    for ci in (8, 16, 32, 40, 48, 56, 64):
        for co in (8, 16, 32, 40, 48, 56, 64):
            pred.add(base.with_channels(ci, co), 0.01 + 1e-5 * ci * co + 1e-4 * ci)
    assert pred.layer_cost(base.with_channels(32, 48)) == pytest.approx(0.01 + 1e-5 * 32 * 48 + 1e-4 * 32)
    for co in (8, 24, 40, 64):
        costs = [pred.layer_cost(base.with_channels(ci, co)) for ci in range(8, 65, 8)]
        assert all(a <= b for a, b in itertools.pairwise(costs))
    for ci in (16, 24, 64):
        costs = [pred.layer_cost(base.with_channels(ci, co)) for co in range(8, 65, 8)]
        assert all(a <= b for a, b in itertools.pairwise(costs))
    # an unaligned count is priced on the unaligned lattice, not between aligned neighbours
    for c in (7, 15, 31, 39, 47, 55, 63):
        pred.add(base.with_channels(c, 64), 1.0 + c / 100)
    assert pred.layer_cost(base.with_channels(20, 64)) > pred.layer_cost(base.with_channels(24, 64))
    with pytest.raises(BadInput, match="no table"):
        pred.layer_cost(base.with_channels(8, 8, "int8"))


def test_default_profile_path():
    p = default_profile_path("cpu-ort", "resnet56-cifar10")
    assert p.name == "cpu-ort--resnet56-cifar10.json" and p.parent.name == "profiles"


def test_new_profiles_go_to_the_cache_or_profiles_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPRUNE_CACHE_DIR", str(tmp_path / "cache"))
    kw = {"model_name": "small", "calibration": 0, "audit": 0, **QUICK}
    prof = profile(Small().eval(), EXAMPLE, "vta-pynq", **kw)
    assert prof.path == tmp_path / "cache" / "profiles" / "vta-pynq--small--12x12.json" and prof.path.is_file()
    prof = profile(Small().eval(), EXAMPLE, "vta-pynq", profiles=tmp_path / "mine", **kw)
    assert prof.path == tmp_path / "mine" / "vta-pynq--small--12x12.json" and prof.path.is_file()


def test_vta_backend_returns_cycles():
    vta = pytest.importorskip("edgeprune.vta")
    if not hasattr(vta, "layer_cycles"):
        pytest.skip("edgeprune.vta has no layer_cycles yet")
    from edgeprune.backends import get_backend
    from edgeprune.config import Target

    target = Target("vta-pynq", "vta", precisions=("int8",), channel_multiple=16, clock_mhz=100.0, options={"board": "pynq"})
    backend = get_backend("vta")
    ok, why = backend.availability(target)
    assert ok, why
    sig = LayerSignature("conv2d", 32, 32, (3, 3), (1, 1), (1, 1), 1, (16, 16), "int8", "bn+relu")
    t = backend.time_layer(sig, target, TimingProtocol.quick())
    assert t.unit == "cycles" and t.median > 0 and t.count == 1
    assert backend.time_layer(sig.with_channels(64, 64), target, TimingProtocol.quick()).median > t.median


def test_fit_calibration_recovers_a_line_and_falls_back():
    from edgeprune.profile.lut import fit_calibration

    pts = [({"layers": x, "unaligned_melems": u}, 0.8 * x + 0.5 * u + 0.1) for x, u in
           [(1.0, 0.0), (0.8, 0.2), (0.6, 0.5), (0.9, 0.1), (0.5, 0.0), (0.7, 0.3)]]
    coef = fit_calibration(pts)
    assert coef["layers"] == pytest.approx(0.8) and coef["unaligned_melems"] == pytest.approx(0.5)
    assert coef["offset"] == pytest.approx(0.1)
    # too few points for two terms: layers + offset only; one point: offset only
    assert set(fit_calibration(pts[:3])) == {"layers", "offset"}
    assert fit_calibration(pts[:1]) == {"layers": 1.0, "offset": pytest.approx(pts[0][1] - 1.0)}


def test_refit_rescores_the_stored_audit(small_profile):
    import copy

    from edgeprune.graph import channel_groups
    from edgeprune.profile import Profile, refit

    prof = Profile(copy.deepcopy(small_profile.data), None)
    refit(prof, channel_groups(Small().eval(), EXAMPLE))
    assert prof.audit["n"] == 2
    assert prof.data["calibration"]["coef"] == pytest.approx(small_profile.data["calibration"]["coef"])
    assert [r["measured"] for r in prof.audit["configs"]] == [r["measured"] for r in small_profile.audit["configs"]]
    assert prof.audit["measured_with_calibration"] is True


def test_measure_engines_times_fp32_and_int8_engines_interleaved(tmp_path):
    from edgeprune.compile import compile as emit
    from edgeprune.config import get_target
    from edgeprune.profile import measure_engines

    tgt = get_target("cpu-ort")
    m = Small().eval()
    fp32 = emit(m, tgt, tmp_path / "fp32", EXAMPLE)
    calib = torch.randn(128, 3, 12, 12).numpy()
    int8 = emit(m, tgt, tmp_path / "int8", EXAMPLE, quantize={"calib": calib})
    engines = {"fp32": fp32.files["onnx"],
               "int8": (int8.files["onnx_int8"], int8.manifest["disabled_optimizers"])}
    t, per_pass = measure_engines(engines, tgt, ModelProtocol.quick())
    assert set(t) == {"fp32", "int8"} and all(v.median > 0 for v in t.values())
    assert all(len(v) == ModelProtocol.quick().passes for v in per_pass.values())
