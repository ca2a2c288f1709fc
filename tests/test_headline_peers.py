"""The headline benchmark's issue-25 machinery: results names, seeds and the spread rule, the NNCF and ModelOpt peers,
upscaled CIFAR data, and (slow) quick runs end to end with NNCF rows, seeds and a generic model path."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def test_results_names_follow_the_issue():
    from headline import results_stem

    assert results_stem("resnet56", "cpu-ort", 0.33) == "headline-resnet56-cpu-ort-0.33x"
    assert results_stem("resnet56", "cpu-ort", 0.35) == "headline-resnet56-cpu-ort-0.35x"
    assert results_stem("resnet56", "cpu-ort", 0.5) == "headline-resnet56-cpu-ort"  # issue 12's file
    assert results_stem("resnet20", "cpu-ort", 0.6) == "headline-resnet20-cpu-ort"
    assert results_stem("efficientnet-lite0", "cpu-ort", 0.5) == "headline-efficientnet-lite0-cpu-ort-0.5x"
    assert results_stem("efficientnet-lite0", "cpu-ort", 0.33) == "headline-efficientnet-lite0-cpu-ort-0.33x"
    assert results_stem("torchvision:mobilenet_v2", "cpu-ort", 0.5) == "headline-torchvision-mobilenet_v2-cpu-ort-0.5x"


def test_coarse_grid_is_every_other_point_of_the_fine_one():
    """--grid coarse thins every method alike, keeps 1.0x the budget, and stays in the descending order the plan
    loop relies on (it stops at the first limit no plan meets)."""
    from headline import GRIDS

    fine, coarse = GRIDS["fine"], GRIDS["coarse"]
    for a, b in ((fine.ep_scales, coarse.ep_scales), (fine.macs_fractions, coarse.macs_fractions),
                 (fine.tp_ratios, coarse.tp_ratios)):
        assert set(b) <= set(a) and len(a) // 2 <= len(b) < len(a)
    assert 1.0 in coarse.ep_scales and min(coarse.ep_scales) <= 0.6
    for ladder in (fine.ep_scales, coarse.ep_scales, fine.macs_fractions, coarse.macs_fractions):
        assert list(ladder) == sorted(ladder, reverse=True)


def test_model_specs():
    from headline import resolve_model

    r56 = resolve_model("resnet56", None)
    assert (r56.spec, r56.name, r56.image_size, r56.prune_from, r56.num_classes) == \
        ("resnet56-cifar10", "resnet56-cifar10", None, "pretrained", None)
    lite = resolve_model("efficientnet-lite0", 128)
    assert (lite.spec, lite.image_size, lite.prune_from, lite.num_classes) == ("efficientnet-lite:lite0", 128, "dense", 10)
    assert lite.name == "efficientnet-lite0-cifar10-128px"
    mnv2 = resolve_model("torchvision:mobilenet_v2", 64)
    assert mnv2.spec == "torchvision:mobilenet_v2" and mnv2.image_size == 64
    assert mnv2.load()(torch.zeros(1, 3, 64, 64)).shape == (1, 10)


def test_seed_summary_and_the_spread_rule():
    from headline_seeds import seed_summary, verdict

    s = seed_summary([80.0, 81.0, 82.0])
    assert s == {"seeds": 3, "top1": 81.0, "top1_std": 1.0}
    assert seed_summary([70.0]) == {"seeds": 1, "top1": 70.0, "top1_std": 0.0}
    ep = {"method": "edgeprune", **s}
    close = {"method": "peer", "seeds": 3, "top1": 80.5, "top1_std": 0.6}
    far = {"method": "peer", "seeds": 3, "top1": 78.0, "top1_std": 0.6}
    assert "within the spread" in verdict(ep, close)
    assert "ahead of peer beyond the seeds' spread" in verdict(ep, far)
    assert "behind" in verdict({**far, "method": "edgeprune"}, {**ep, "method": "peer"})
    # one seed has no spread: never "ahead", however large the gap
    one = verdict({"method": "edgeprune", "top1": 90.0}, {"method": "peer", "top1": 70.0})
    assert "is ahead" not in one and "not claimed ahead or behind" in one and "single seed" in one


def test_seeded_rows_and_comparison_use_only_rows_within_budget():
    from headline import compare, seeded_rows

    results = {"ep-int8": {"top1": 80.0}, "ep": {"top1": 85.0}, "macs": {"top1": 90.0}, "tp-l1": {"top1": 84.0},
               "nncf-int8": {"top1": 86.0}, "tp-l1-nncf-int8": {"top1": 79.0}}
    ratios = {"ep-int8": 0.32, "ep": 0.40, "macs": 0.30, "tp-l1": 0.31, "nncf-int8": 0.45, "tp-l1-nncf-int8": 0.33}
    assert seeded_rows(results, ratios, 0.33) == ["ep-int8", "tp-l1"]
    rows = {m: {"method": m, "top1": results[m]["top1"], "latency_ratio": ratios[m]} for m in results}
    assert "ep-int8 vs tp-l1" in compare(rows, 0.33)
    # the seeded rows are the ones compared; a peer that scored higher on its one seed is named
    rows["tp-l1-nncf-int8"]["top1"] = 88.0
    text = compare(rows, 0.33, ["ep-int8", "tp-l1"])
    assert "ep-int8 vs tp-l1:" in text and "higher on one seed: tp-l1-nncf-int8 88.00%" in text
    assert compare(rows, 0.2).startswith("no comparison within the 0.2x budget")


def test_upscaled_images_are_lazy_and_upscale_per_batch():
    from headline_data import UpscaledImageSet, upscale

    from edgeprune.data import Dataset, ImageSet

    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    ds = Dataset("toy", ImageSet(imgs, np.arange(20) % 10), ImageSet(imgs[:10], np.arange(10)))
    up = upscale(ds, 64)
    assert up.name == "toy@64px" and up.input_shape == (1, 3, 64, 64)
    assert up.train.images.shape == (20, 64, 64, 3) and up.train.images[np.array([1, 3])].shape == (2, 64, 64, 3)
    sub = up.train.subset(np.array([2, 5, 7]))
    assert isinstance(sub, UpscaledImageSet) and sub.images.base.shape == (3, 32, 32, 3)  # nothing upscaled yet
    x, y = next(sub.batches(2))
    assert x.shape == (2, 3, 64, 64) and y.tolist() == [2, 5]
    assert up.train.sample(4).shape == (4, 3, 64, 64)
    # a flat image stays flat: the upscaling keeps values (bilinear, rounded back to uint8)
    flat = np.full((1, 32, 32, 3), 77, np.uint8)
    assert (up.train.images.resize(flat) == 77).all()
    assert upscale(ds, 32) is ds and upscale(ds, None) is ds


def test_nncf_engine_is_an_int8_qdq_engine_that_runs(tmp_path):
    from headline_peers import nncf_engine, nncf_reason

    if nncf_reason():
        pytest.skip(nncf_reason())
    import onnx

    from edgeprune.config import get_target
    from edgeprune.models import load_model

    model = load_model("resnet20-cifar10").eval()
    x = torch.randn(8, 3, 32, 32)
    eng = nncf_engine(model, get_target("cpu-ort"), tmp_path, x[:1], x)
    path, disabled = eng.onnx_engine()
    assert path.name == "model.nncf-int8.onnx" and disabled == []
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    out = np.asarray(eng.outputs(x[:2].numpy())[0])
    assert out.shape == (2, 10) and np.isfinite(out).all()
    assert eng.manifest["quantizer"].startswith("nncf")


@pytest.mark.parametrize("per_tensor", [False, True])
def test_nncf_activation_scales_before_a_depthwise_conv(tmp_path, per_tensor):
    """NNCF's default puts a per-channel QuantizeLinear before a depthwise conv (ORT then runs that conv in
    float); per_tensor_activations gives every activation quantiser one scale, the form ORT fuses."""
    from headline_peers import nncf_quantize_file, nncf_reason

    if nncf_reason():
        pytest.skip(nncf_reason())
    import onnx
    from onnx import numpy_helper

    from edgeprune.compile.onnx_export import export_onnx

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 1), nn.ReLU6(), nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.ReLU6(),
                          nn.Conv2d(16, 8, 1)).eval()
    x = torch.randn(16, 3, 16, 16)
    fp32 = export_onnx(model, x[:1], tmp_path / "m.onnx")
    q = onnx.load(str(nncf_quantize_file(fp32, tmp_path / "q.onnx", x, per_tensor_activations=per_tensor)))
    values = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    values |= {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in q.graph.node if n.op_type == "Constant"}
    weights = {i.name for i in q.graph.initializer if i.data_type == onnx.TensorProto.FLOAT and values[i.name].ndim == 4}
    act_scales = [values[n.input[1]].size for n in q.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in weights]
    assert act_scales and (max(act_scales) == 1) == per_tensor


def test_modelopt_reason_is_one_line(tmp_path):
    from headline_peers import modelopt_reason

    why = modelopt_reason(str(tmp_path))  # an empty site: nothing to import from it unless the venv has it
    assert why and "\n" not in why


def _run(tmp_path: Path, *args: str) -> tuple[dict, Path]:
    out = tmp_path / "results"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "headline.py"), "--quick", "--out", str(out),
           "--cache", str(tmp_path / "cache"), "--eval-limit", "200", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1500, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = sorted(out.glob("*.json"))
    main = [f for f in files if not f.name.endswith(".details.json")]
    assert len(main) == 1, files
    return json.loads(main[0].read_text()), main[0]


def _check_shape(doc: dict) -> None:
    assert {"dense", "rows", "machine", "versions", "protocol", "not_run", "comparison"} == set(doc)
    assert doc["protocol"].startswith("QUICK SMOKE RUN")
    for r in doc["rows"]:
        assert {"method", "latency_ms", "latency_ratio", "top1", "params", "macs", "epochs"} <= set(r)
        assert set(r) - {"method", "latency_ms", "latency_ratio", "top1", "params", "macs", "epochs"} <= {"seeds", "top1_std"}
        assert r["latency_ms"] > 0 and 0 <= r["top1"] <= 100


@pytest.mark.slow
def test_headline_quick_with_nncf_rows_seeds_and_a_reason_row(tmp_path):
    doc, path = _run(tmp_path, "--model", "resnet20", "--ratio", "0.55", "--seeds", "2",
                     "--rows", "ep-int8,tp-l1,nncf-int8,tp-l1-nncf-int8,modelopt")
    assert path.name == "headline-resnet20-cpu-ort-0.55x.json"
    _check_shape(doc)
    methods = [r["method"] for r in doc["rows"]]
    assert any(m.startswith("NNCF int8 of the dense model: NNCF") for m in methods), methods
    assert any(m.startswith("torch-pruning") and "NNCF" in m for m in methods), methods
    assert [r["method"] for r in doc["not_run"]] == ["NVIDIA ModelOpt FastNAS (channel search under a FLOPs constraint)"]
    seeded = [r for r in doc["rows"] if r.get("seeds")]
    assert seeded and all(r["seeds"] == 2 and r["top1_std"] >= 0 for r in seeded)
    md = path.with_suffix(".md").read_text()
    cpu = doc["machine"].split(" (")[0]
    assert cpu in md.splitlines()[0] and "not run:" in md and "Comparison:" in md
    details = json.loads(path.with_name(path.stem + ".details.json").read_text())
    assert all(len(details["rows"][r["method"]]["top1_seeds"]) == 2 for r in seeded)


@pytest.mark.slow
def test_headline_quick_generic_model_upscaled(tmp_path):
    # the EfficientNet-Lite0 path (--model efficientnet-lite0) with a stand-in that exists everywhere
    doc, path = _run(tmp_path, "--model", "torchvision:mobilenet_v2", "--image-size", "64", "--ratio", "0.5",
                     "--rows", "tp-l1,nncf-int8")
    assert path.name == "headline-torchvision-mobilenet_v2-cpu-ort-0.5x.json"
    _check_shape(doc)
    assert "upscaled from 32 to 64 px" in doc["protocol"] and "pruned from the fine-tuned dense reference" in doc["protocol"]
    assert {r["method"].split(" ")[0] for r in doc["rows"]} <= {"torch-pruning", "NNCF"}
    assert len(doc["rows"]) + len(doc["not_run"]) == 2
