"""TensorRT target: what needs no TensorRT runs everywhere; the rest skips with a reason.

The inspector fixture below is hand-written from TensorRT's documented engine-inspector JSON
format, not recorded from a TensorRT run (none is installable here); the format is
``LayerInformationFormat.JSON`` at ``ProfilingVerbosity.DETAILED``: a ``Layers``
list of objects with ``Name``, ``LayerType``, ``Inputs``/``Outputs`` (``Name``,
``Format/Datatype``), ``TacticName`` and ``Metadata`` (``[ONNX Layer: x]`` entries
joined by the 0x1F unit separator), and a ``Bindings`` list of I/O tensor names.
Layer names are TensorRT's fused names for the TorchScript export of ResNet-20.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeprune.backends.trt.config import (
    OTHER,
    OnnxInfo,
    build_layer_map,
    build_spec,
    check_qdq_for_tensorrt,
    onnx_info,
    onnx_node_to_layer,
    parse_engine_info,
    sources_from_metadata,
    sources_from_name,
    timing_cache_path,
)
from edgeprune.config import Target, load_target
from edgeprune.errors import BackendUnavailable, BadInput

ROOT = Path(__file__).resolve().parents[1]
TRT_TARGETS = ["jetson-orin-nano-trt", "jetson-agx-orin-trt", "gpu-trt"]
US = "\u001f"


def _t(name: str, fmt: str = "Channel major FP16 format where channel % 8 == 0") -> dict:
    return {"Name": name, "Location": "Device", "Dimensions": [1, 16, 32, 32], "Format/Datatype": fmt}


def _meta(*nodes: str) -> str:
    return US.join(f"[ONNX Layer: {n}]" for n in nodes)


INSPECTOR = {
    "Layers": [
        {
            "Name": "Reformatting CopyNode for Input Tensor 0 to /conv1/Conv + /Relu",
            "LayerType": "Reformat",
            "Inputs": [_t("input", "Row major linear FP32")],
            "Outputs": [_t("Reformatted Input Tensor 0 to /conv1/Conv + /Relu")],
            "ParameterType": "Reformat",
            "Origin": "REFORMAT",
            "TacticValue": "0x0000000000000000",
            "StreamId": 0,
            "Metadata": "",
        },
        {
            "Name": "/conv1/Conv + /Relu",
            "LayerType": "CaskConvolution",
            "Inputs": [_t("Reformatted Input Tensor 0 to /conv1/Conv + /Relu")],
            "Outputs": [_t("/Relu_output_0")],
            "ParameterType": "Convolution",
            "Kernel": [3, 3],
            "TacticName": "sm80_xmma_fprop_implicit_gemm_f16f16_f16f16_f16_nhwckrsc_nhwc_tilesize32x32x64_stage5",
            "StreamId": 0,
            "Metadata": _meta("/conv1/Conv", "/Relu"),
        },
        {
            "Name": "/layer1/layer1.0/conv1/Conv + /layer1/layer1.0/Relu",
            "LayerType": "CaskConvolution",
            "Inputs": [_t("/Relu_output_0")],
            "Outputs": [_t("/layer1/layer1.0/Relu_output_0")],
            "TacticName": "sm80_xmma_fprop_implicit_gemm_f16f16_f16f16_f16_nhwckrsc_nhwc_tilesize32x32x64_stage5",
            "Metadata": _meta("/layer1/layer1.0/conv1/Conv", "/layer1/layer1.0/Relu"),
        },
        {
            "Name": "/layer1/layer1.0/conv2/Conv + /layer1/layer1.0/Add + /layer1/layer1.0/Relu_1",
            "LayerType": "CaskConvolution",
            "Inputs": [_t("/layer1/layer1.0/Relu_output_0"), _t("/Relu_output_0")],
            "Outputs": [_t("/layer1/layer1.0/Relu_1_output_0")],
            "TacticName": "sm80_xmma_fprop_implicit_gemm_f16f16_f16f16_f16_nhwckrsc_nhwc_tilesize32x32x64_stage5",
            "Metadata": _meta("/layer1/layer1.0/conv2/Conv", "/layer1/layer1.0/Add", "/layer1/layer1.0/Relu_1"),
        },
        {
            "Name": "Reformatting CopyNode for Input Tensor 0 to /layer2/layer2.0/conv1/Conv + /layer2/layer2.0/Relu",
            "LayerType": "Reformat",
            "Inputs": [_t("/layer1/layer1.0/Relu_1_output_0")],
            "Outputs": [_t("Reformatted Input Tensor 0 to /layer2/layer2.0/conv1/Conv + /layer2/layer2.0/Relu", "Row major linear FP16")],
            "Origin": "REFORMAT",
            "Metadata": "",
        },
        {
            "Name": "/layer2/layer2.0/conv1/Conv + /layer2/layer2.0/Relu",
            "LayerType": "CaskConvolution",
            "Inputs": [_t("Reformatted Input Tensor 0 to /layer2/layer2.0/conv1/Conv + /layer2/layer2.0/Relu")],
            "Outputs": [_t("/layer2/layer2.0/Relu_output_0")],
            "TacticName": "sm80_xmma_fprop_implicit_gemm_f16f16_f16f16_f16_nchwkcrs_nchw",
            "Metadata": _meta("/layer2/layer2.0/conv1/Conv", "/layer2/layer2.0/Relu"),
        },
        {
            "Name": "{ForeignNode[/layer2/layer2.0/conv2/Conv.../layer2/layer2.0/Relu_1]}",
            "LayerType": "Myelin",
            "Inputs": [_t("/layer2/layer2.0/Relu_output_0"), _t("/layer1/layer1.0/Relu_1_output_0")],
            "Outputs": [_t("/layer2/layer2.0/Relu_1_output_0")],
            "TacticName": "",
            "Metadata": _meta("/layer2/layer2.0/conv2/Conv", "/layer2/layer2.0/shortcut/Conv", "/layer2/layer2.0/Add", "/layer2/layer2.0/Relu_1"),
        },
        {
            "Name": "/GlobalAveragePool",
            "LayerType": "CaskPooling",
            "Inputs": [_t("/layer2/layer2.0/Relu_1_output_0")],
            "Outputs": [_t("/GlobalAveragePool_output_0")],
            "Metadata": _meta("/GlobalAveragePool"),
        },
        {
            "Name": "/Flatten + /linear/Gemm",
            "LayerType": "CaskGemmConvolution",
            "Inputs": [_t("/GlobalAveragePool_output_0")],
            "Outputs": [_t("/linear/Gemm_output_0", "Row major linear FP16")],
            "Metadata": _meta("/Flatten", "/linear/Gemm"),
        },
        {
            "Name": "Reformatting CopyNode for Output Tensor 0 to /Flatten + /linear/Gemm",
            "LayerType": "Reformat",
            "Inputs": [_t("/linear/Gemm_output_0", "Row major linear FP16")],
            "Outputs": [_t("output", "Row major linear FP32")],
            "Origin": "REFORMAT",
            "Metadata": "",
        },
    ],
    "Bindings": ["input", "output"],
}

# MACs of the two convs inside the Myelin region (ResNet-20, CIFAR): 3x3 32->32 at 16x16, 1x1 16->32 stride 2
CONV2_MACS = 16 * 16 * 32 * 32 * 9
SHORTCUT_MACS = 16 * 16 * 32 * 16
INFO = OnnxInfo(
    order=(),
    op_types={},
    macs={"/layer2/layer2.0/conv2/Conv": CONV2_MACS, "/layer2/layer2.0/shortcut/Conv": SHORTCUT_MACS},
)


def _no_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError


# --------------------------------------------------------------------------- name mapping (everywhere)


def test_onnx_node_to_layer_reads_module_scopes():
    assert onnx_node_to_layer("/layer1/layer1.0/conv1/Conv") == "layer1.0.conv1"
    assert onnx_node_to_layer("/conv1/Conv") == "conv1"
    assert onnx_node_to_layer("/linear/Gemm") == "linear"
    assert onnx_node_to_layer("/layer2/layer2.0/shortcut/Conv") == "layer2.0.shortcut"
    assert onnx_node_to_layer("/features/features.3/features.3.conv/Conv") == "features.3.conv"
    assert onnx_node_to_layer("/Relu") is None
    assert onnx_node_to_layer("node_conv2d_3") is None


def test_sources_from_metadata_and_names():
    assert sources_from_metadata(_meta("/a/Conv", "/a/Relu")) == ["/a/Conv", "/a/Relu"]
    # newer parsers append the local-function stack after a bar
    assert sources_from_metadata("[ONNX Layer: /a/Conv | /blk (MyFn)]") == ["/a/Conv"]
    assert sources_from_name("/a/conv2/Conv + /a/Add + /a/Relu_1") == ["/a/conv2/Conv", "/a/Add", "/a/Relu_1"]
    assert sources_from_name("PWN(PWN(/a/Add), /a/Relu_1)") == ["/a/Add", "/a/Relu_1"]
    assert sources_from_name("/a/conv1/Conv + /a/Relu [profile 1]") == ["/a/conv1/Conv", "/a/Relu"]
    assert sources_from_name("Reformatting CopyNode for Input Tensor 0 to /b/Conv + /b/Relu") == ["/b/Conv", "/b/Relu"]
    order = ["/a/Conv", "/a/Relu", "/b/Conv", "/b/Add", "/c/Gemm"]
    assert sources_from_name("{ForeignNode[/a/Relu.../b/Add]}", order) == ["/a/Relu", "/b/Conv", "/b/Add"]
    assert sources_from_name("{ForeignNode[/a/Relu.../b/Add]}") == ["/a/Relu", "/b/Add"]


def test_parse_detailed_inspector_json():
    layers = parse_engine_info(json.dumps(INSPECTOR))
    assert len(layers) == len(INSPECTOR["Layers"])
    conv = layers[3]
    assert conv.sources == ("/layer1/layer1.0/conv2/Conv", "/layer1/layer1.0/Add", "/layer1/layer1.0/Relu_1")
    assert conv.layer_type == "CaskConvolution" and conv.tactic.startswith("sm80_")
    assert conv.precision.startswith("Channel major FP16")
    assert layers[0].inputs == ("input",)


def test_attribution_of_detailed_inspector_json():
    lm = build_layer_map(INSPECTOR, INFO)
    names = [lay["Name"] for lay in INSPECTOR["Layers"]]
    times = {n: 0.01 * (i + 1) for i, n in enumerate(names)}
    got = lm.attribute(times)
    # time is conserved: every engine layer's time lands somewhere
    assert sum(got.values()) == pytest.approx(sum(times.values()))
    # a conv fused with BN/ReLU/Add takes all of its layer's time
    assert got["conv1"] == pytest.approx(times["/conv1/Conv + /Relu"])
    assert got["layer1.0.conv1"] == pytest.approx(times[names[2]])
    assert got["layer1.0.conv2"] == pytest.approx(times[names[3]])
    # an internal reformat is charged to the layer it feeds
    assert got["layer2.0.conv1"] == pytest.approx(times[names[4]] + times[names[5]])
    # a region fusing two convs is spread by MACs
    region = times[names[6]]
    share = CONV2_MACS / (CONV2_MACS + SHORTCUT_MACS)
    assert got["layer2.0.conv2"] == pytest.approx(region * share)
    assert got["layer2.0.shortcut"] == pytest.approx(region * (1 - share))
    assert got["linear"] == pytest.approx(times[names[8]])
    # pooling and the network's own input/output reformats are "other"
    assert got[OTHER] == pytest.approx(times[names[0]] + times[names[7]] + times[names[9]])
    assert set(got) == {"conv1", "layer1.0.conv1", "layer1.0.conv2", "layer2.0.conv1", "layer2.0.conv2", "layer2.0.shortcut", "linear", OTHER}


def test_attribution_without_macs_splits_equally_and_names_unknown_go_to_other():
    lm = build_layer_map(INSPECTOR)
    region = "{ForeignNode[/layer2/layer2.0/conv2/Conv.../layer2/layer2.0/Relu_1]}"
    got = lm.attribute({region: 1.0, "__myl_some_kernel_we_never_saw": 0.5})
    assert got["layer2.0.conv2"] == pytest.approx(0.5)
    assert got["layer2.0.shortcut"] == pytest.approx(0.5)
    assert got[OTHER] == pytest.approx(0.5)


def test_layer_names_only_and_profiler_name_list():
    names = [lay["Name"] for lay in INSPECTOR["Layers"]]
    for names_form in ({"Layers": names}, names):
        lm = build_layer_map(names_form)
        got = lm.attribute({n: 1.0 for n in names})
        assert got["layer1.0.conv2"] == pytest.approx(1.0)
        assert got["layer2.0.conv1"] == pytest.approx(2.0)  # its reformat + itself
        assert sum(got.values()) == pytest.approx(len(names))
        # without Bindings the input reformat is charged to conv1 (documented fallback)
        assert got["conv1"] == pytest.approx(2.0)


def test_int8_names_with_quantize_nodes():
    names = [
        "/layer1/layer1.0/Relu_output_0_QuantizeLinear",
        "/layer1/layer1.0/conv2/Conv + /layer1/layer1.0/Add + /layer1/layer1.0/Relu_1 + /layer1/layer1.0/Relu_1_output_0_QuantizeLinear",
    ]
    got = build_layer_map(names).attribute({names[0]: 0.2, names[1]: 1.0})
    assert got == pytest.approx({OTHER: 0.2, "layer1.0.conv2": 1.0})


def test_explicit_layer_names_override_scopes():
    lm = build_layer_map(INSPECTOR, INFO, layer_of={"/conv1/Conv": "stem"})
    assert "stem" in lm.attribute({"/conv1/Conv + /Relu": 1.0})


def test_mapping_against_a_real_export():
    from edgeprune.compile.onnx_export import export_onnx
    from edgeprune.graph import channel_groups
    from edgeprune.models import MODELS

    model = MODELS.get("resnet20-cifar10")(False)
    x = torch.zeros(1, 3, 32, 32)
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        info = onnx_info(export_onnx(model, x, Path(d) / "m.onnx"))
    convs = [n for n, op in info.op_types.items() if op in ("Conv", "Gemm")]
    layers = set(channel_groups(model, x).layers)
    # every layer edgeprune keys is found among the conv/gemm nodes (plus the fixed option-A shortcut selections)
    mapped = {onnx_node_to_layer(n) for n in convs}
    assert mapped == layers | {"layer2.0.shortcut", "layer3.0.shortcut"}
    # restricted to the known layers, a shortcut's share of a region goes to "other"
    lm = build_layer_map(INSPECTOR, INFO, known=layers)
    got = lm.attribute({"{ForeignNode[/layer2/layer2.0/conv2/Conv.../layer2/layer2.0/Relu_1]}": 1.0})
    assert set(got) == {"layer2.0.conv2", OTHER} and got[OTHER] == pytest.approx(SHORTCUT_MACS / (CONV2_MACS + SHORTCUT_MACS))
    assert info.macs["/layer2/layer2.0/conv2/Conv"] == CONV2_MACS
    # a Myelin region's name expands to the ONNX nodes between its ends
    srcs = sources_from_name("{ForeignNode[/layer1/layer1.0/conv1/Conv.../layer1/layer1.0/Relu_1]}", info.order)
    assert srcs[0] == "/layer1/layer1.0/conv1/Conv" and srcs[-1] == "/layer1/layer1.0/Relu_1"
    assert "/layer1/layer1.0/conv2/Conv" in srcs


def test_malformed_engine_info():
    with pytest.raises(BadInput, match="malformed"):
        parse_engine_info("{not json")
    with pytest.raises(BadInput, match="without a Name"):
        parse_engine_info({"Layers": [{"LayerType": "x"}]})


# --------------------------------------------------------------------------- builder config (everywhere)


@pytest.mark.parametrize("name", TRT_TARGETS)
def test_target_files_load_and_translate(name, tmp_path):
    t = load_target(ROOT / "edgeprune" / "targets" / f"{name}.toml")
    assert t.name == name and t.backend == "trt" and t.host == "local"
    assert set(t.precisions) == {"fp32", "fp16", "int8"}
    assert t.channel_multiple == 8
    expected = {"fp32": (), "fp16": ("FP16",), "int8": ("INT8", "FP16")}
    for prec in t.precisions:
        spec = build_spec(t, prec, engine_dir=tmp_path)
        assert spec.flags == expected[prec]
        assert spec.precision == prec and spec.dla_core is None
        assert spec.workspace_bytes == t.options["workspace_mib"] << 20
        assert spec.timing_cache == tmp_path / f"{name}.timing.cache"
        assert spec.profiling_verbosity == "DETAILED"
        json.dumps(spec.to_dict())
    assert build_spec(t).precision == "fp16"
    # int8 for TensorRT must be symmetric signed int8 (the quantiser reads these)
    assert t.options["int8_activation"] == t.options["int8_weight"] == "QInt8"
    assert t.options["int8_symmetric"] is True


def _target(**options) -> Target:
    return Target("t-trt", "trt", precisions=("fp32", "fp16", "int8"), options=options)


def test_dla_and_other_options():
    t = _target(dla_core=1, gpu_fallback=True, workspace_mib=256, tf32=False, builder_optimization_level=4)
    with pytest.raises(BadInput, match="DLA core 1 runs fp16 or int8 only"):
        build_spec(t, "fp32")
    spec = build_spec(t, "fp16")
    assert spec.flags == ("FP16", "GPU_FALLBACK") and spec.dla_core == 1
    assert spec.clear_flags == ("TF32",) and spec.workspace_bytes == 256 << 20 and spec.optimization_level == 4
    args = spec.trtexec_args("m.onnx", "m.plan")
    for a in ("--fp16", "--allowGPUFallback", "--useDLACore=1", "--noTF32", "--memPoolSize=workspace:256M", "--builderOptimizationLevel=4"):
        assert a in args
    assert build_spec(_target(dla_core=0, gpu_fallback=False), "int8").flags == ("INT8", "FP16")
    assert build_spec(_target(int8_fp16_fallback=False), "int8").flags == ("INT8",)
    assert build_spec(Target("x", "trt", precisions=("fp32", "int8")), "int8").flags == ("INT8",)


def test_bad_precisions_and_options():
    with pytest.raises(BadInput, match="does not list precision fp16"):
        build_spec(Target("x", "trt", precisions=("fp32",)), "fp16")
    with pytest.raises(BadInput, match="must be one of"):
        build_spec(_target(), "int4")
    with pytest.raises(BadInput, match="'workspace_mib' must be int"):
        build_spec(_target(workspace_mib="1G"))
    with pytest.raises(BadInput, match="'dla_core' must be int"):
        build_spec(_target(dla_core=True), "fp16")
    with pytest.raises(BadInput, match="0..5"):
        build_spec(_target(builder_optimization_level=9))
    with pytest.raises(BadInput, match="not 'trt'"):
        build_spec(Target("x", "ort"))
    assert build_spec(Target("x", "trt", precisions=("fp32", "fp16"))).precision == "fp32"


def test_timing_cache_locations(tmp_path, monkeypatch):
    t = _target(timing_cache="~/caches/x.cache")
    assert timing_cache_path(t) == Path("~/caches/x.cache").expanduser()
    monkeypatch.setenv("EDGEPRUNE_CACHE_DIR", str(tmp_path))
    assert timing_cache_path(_target()) == tmp_path / "trt" / "t-trt.timing.cache"
    assert timing_cache_path(_target(), tmp_path / "eng") == tmp_path / "eng" / "t-trt.timing.cache"


def test_qdq_check_and_layer_quantiser():
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from edgeprune.backends.trt.runtime import qdq_layer_model
    from edgeprune.graph.signature import LayerSignature
    from edgeprune.profile.layer_onnx import layer_onnx

    sig = LayerSignature("conv2d", 16, 24, (3, 3), (1, 1), (1, 1), 1, (16, 16), "int8", "bn+add+relu")
    fp32 = layer_onnx(sig)
    assert "explicit Q/DQ" in check_qdq_for_tensorrt(fp32)[0]
    q = qdq_layer_model(fp32)
    assert check_qdq_for_tensorrt(q) == []
    ops = [n.op_type for n in q.graph.node]
    assert ops.count("QuantizeLinear") == 2 and ops.count("DequantizeLinear") == 3  # x, residual, weight
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((1, 16, 16, 16)).astype(np.float32), "residual": rng.standard_normal((1, 24, 16, 16)).astype(np.float32)}
    run = lambda m: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    ref, got = run(fp32), run(q)
    assert np.abs(ref - got).max() < 0.05 * np.abs(ref).max()
    # ORT's default asymmetric uint8 activations are refused before a build
    zp = numpy_helper.from_array(np.array(128, dtype=np.uint8), "zp")
    sc = numpy_helper.from_array(np.array(0.1, dtype=np.float32), "sc")
    g = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "sc", "zp"], ["q"], name="q"), helper.make_node("DequantizeLinear", ["q", "sc", "zp"], ["y"], name="dq")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], [zp, sc],
    )
    problems = check_qdq_for_tensorrt(helper.make_model(g))
    assert len(problems) == 2 and "uint8" in problems[0]


# --------------------------------------------------------------------------- availability (everywhere)


@pytest.mark.parametrize("name", TRT_TARGETS)
def test_unavailable_without_tensorrt(name, monkeypatch):
    _no_tensorrt(monkeypatch)
    ok, reason = load_target(ROOT / "edgeprune" / "targets" / f"{name}.toml").availability()
    assert not ok and reason == "unavailable: tensorrt not installed"


def test_remote_host_is_refused_with_reason():
    from edgeprune.backends import get_backend

    ok, reason = get_backend("trt").availability(Target("x", "trt", host="rpc://127.0.0.1:9190/orin"))
    assert not ok and "runs on the board itself" in reason


def test_backend_and_emitter_are_registered():
    from edgeprune.backends import BACKENDS, Backend, backend_names, get_backend
    from edgeprune.backends.trt.emit import emit_trt
    from edgeprune.backends.trt.options import TrtOptions

    backend = get_backend("trt")
    assert backend.name == "trt" and "trt" in BACKENDS and "trt" in backend_names()
    assert backend.options_schema is TrtOptions and callable(emit_trt)
    assert type(backend).emit is not Backend.emit  # the trt backend has its own emitter


def test_emitter_without_tensorrt_writes_onnx_and_manifest(tmp_path, monkeypatch):
    import edgeprune as ep
    from edgeprune.models import MODELS

    _no_tensorrt(monkeypatch)
    model = MODELS.get("resnet20-cifar10")(False)
    with pytest.raises(BackendUnavailable, match="tensorrt not installed.*build on the device"):
        ep.compile(model, "jetson-orin-nano-trt", tmp_path, torch.zeros(1, 3, 32, 32))
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["engine"] is None and manifest["precision"] == "fp16"
    assert manifest["onnx"] == "model.onnx" and (tmp_path / "model.onnx").is_file()
    assert "--fp16" in manifest["trtexec"] and "--saveEngine=model.plan" in manifest["trtexec"]
    assert manifest["build"]["flags"] == ["FP16"]
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes left nothing behind
    with pytest.raises(BadInput, match="needs calibration data"):
        ep.compile(model, "jetson-orin-nano-trt", tmp_path / "i8", torch.zeros(1, 3, 32, 32), precision="int8")


def test_benchmark_exits_cleanly_without_tensorrt(monkeypatch, capsys):
    import importlib.util

    _no_tensorrt(monkeypatch)
    spec = importlib.util.spec_from_file_location("trt_resnet56", ROOT / "benchmarks" / "trt_resnet56.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with pytest.raises(SystemExit) as exc:
        mod.main([])
    assert exc.value.code == 2
    assert "tensorrt not installed" in capsys.readouterr().err


# --------------------------------------------------------------------------- real TensorRT (GPU machines only)


def _need_trt():
    pytest.importorskip("tensorrt", reason="tensorrt is not installed here (it needs an NVIDIA GPU machine)")
    from edgeprune.backends.trt.runtime import cuda_status

    ok, reason = cuda_status()
    if not ok:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def resnet20():
    from edgeprune.models import MODELS

    return MODELS.get("resnet20-cifar10")(True)


@pytest.mark.parametrize("precision,tol", [("fp32", 1e-2), ("fp16", 5e-2)])
def test_trt_engine_matches_torch(resnet20, tmp_path, precision, tol):
    _need_trt()
    import edgeprune as ep

    x = torch.randn(4, 3, 32, 32)
    eng = ep.compile(resnet20, "gpu-trt", tmp_path, x[:1], precision=precision)
    assert (tmp_path / "model.plan").stat().st_size > 0 and eng.manifest["engine"] == "model.plan"
    got = eng.run(x)
    with torch.no_grad():
        ref = resnet20(x).numpy()
    assert np.abs(got - ref).max() < tol * np.abs(ref).max()
    assert (got.argmax(1) == ref.argmax(1)).all()
    assert (tmp_path / "gpu-trt.timing.cache").is_file()  # beside the engine
    assert json.loads((tmp_path / "model.layers.json").read_text())["Layers"]


def test_trt_timing_cache_reused(resnet20, tmp_path):
    _need_trt()
    from edgeprune.backends.trt.runtime import build_engine
    from edgeprune.compile.onnx_export import export_onnx

    onnx_path = export_onnx(resnet20, torch.zeros(1, 3, 32, 32), tmp_path / "m.onnx")
    spec = build_spec(load_target(ROOT / "edgeprune" / "targets" / "gpu-trt.toml"), "fp16", engine_dir=tmp_path)
    first = build_engine(onnx_path, spec)
    second = build_engine(onnx_path, spec)
    assert not first.timing_cache_reused and second.timing_cache_reused
    assert second.build_seconds <= first.build_seconds * 1.5


def test_trt_per_layer_profile(resnet20, tmp_path):
    _need_trt()
    from edgeprune.backends import get_backend
    from edgeprune.compile.onnx_export import export_onnx
    from edgeprune.graph import channel_groups
    from edgeprune.profile.timing import TimingProtocol

    x = torch.zeros(1, 3, 32, 32)
    onnx_path = export_onnx(resnet20, x, tmp_path / "m.onnx")
    target = load_target(ROOT / "edgeprune" / "targets" / "gpu-trt.toml")
    layers = set(channel_groups(resnet20, x).layers)
    prof = get_backend("trt").profile_layers(onnx_path, target, TimingProtocol.quick(), precision="fp16", known=layers)
    timed = set(prof.layers) - {OTHER}
    assert timed <= layers and len(timed) >= len(layers) - 3  # TensorRT may fuse a few into regions
    assert all(t.median > 0 for k, t in prof.layers.items() if k != OTHER)
    per_run_total = sum(t.median for t in prof.engine_layers.values())
    assert prof.engine.median > 0 and per_run_total > 0


@pytest.mark.parametrize("dtype", ["fp32", "fp16", "int8"])
def test_trt_time_layer(dtype):
    _need_trt()
    from edgeprune.backends import get_backend
    from edgeprune.graph.signature import LayerSignature
    from edgeprune.profile.timing import TimingProtocol

    sig = LayerSignature("conv2d", 32, 32, (3, 3), (1, 1), (1, 1), 1, (16, 16), dtype, "bn+relu")
    t = get_backend("trt").time_layer(sig, load_target(ROOT / "edgeprune" / "targets" / "gpu-trt.toml"), TimingProtocol.quick())
    assert t.median > 0 and t.count >= 10


def test_trt_runner_for_interleaved_timing(resnet20, tmp_path):
    _need_trt()
    from edgeprune.backends import get_backend
    from edgeprune.compile.onnx_export import export_onnx
    from edgeprune.profile.timing import TimingProtocol, interleaved

    onnx_path = export_onnx(resnet20, torch.zeros(1, 3, 32, 32), tmp_path / "m.onnx")
    target = load_target(ROOT / "edgeprune" / "targets" / "gpu-trt.toml")
    backend = get_backend("trt")
    run = backend.make_runner(onnx_path, target)
    other = backend.make_runner(onnx_path, target, ())
    assert run() is None  # one enqueue + sync on the runner's fixed inputs
    t = interleaved({"a": run, "b": other}, TimingProtocol.quick(), 2)
    assert all(0 < t[k].median < 1000 and t[k].count >= 1 for k in ("a", "b"))
    # the runner's engine is the model: its session computes what PyTorch does (fp16 tolerance)
    x = torch.randn(2, 3, 32, 32)
    got = run.session.run(x[:1].numpy())
    want = resnet20.eval()(x[:1]).detach().numpy()
    assert got.shape == want.shape and np.abs(got - want).max() <= 0.05 * max(1.0, float(np.abs(want).max()))
