"""ONNX Runtime CUDA backend (``gpu-ort-cuda``): target and options, the CUDA provider list, IO-bound runs, the
profiler-JSON parser, fp32/fp16 layer timing and engines, and the refusal where CUDA is absent.

This machine has no GPU and the CPU ``onnxruntime`` package. Tests of code that does not need CUDA run for real;
the backend's functions take ``provider="cpu"`` so the same code path runs on ORT's CPU provider here (a
parameter, not a mock of a result). Tests that need ``onnxruntime-gpu`` and an NVIDIA GPU skip with the reason;
``benchmarks/gpu_ort_cuda.py`` is the device check (docs/gpu.md).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeprune.config import get_target
from edgeprune.errors import BadInput

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _cuda() -> tuple[bool, str]:
    from edgeprune.backends.ort_cuda.session import cuda_available

    return cuda_available()


HAVE_CUDA, WHY_NOT = _cuda()
needs_cuda = pytest.mark.skipif(not HAVE_CUDA, reason=WHY_NOT)
no_cuda = pytest.mark.skipif(HAVE_CUDA, reason="CUDA is available here: the refusal cannot be seen")


@pytest.fixture(scope="module")
def target():
    return get_target("gpu-ort-cuda")


@pytest.fixture(scope="module")
def backend():
    from edgeprune.backends import get_backend

    return get_backend("ort_cuda")


def _with_options(t, **options):
    import dataclasses

    return dataclasses.replace(t, options={**t.options, **options})


def _sig(dtype="fp32"):
    from edgeprune.graph.signature import LayerSignature

    return LayerSignature(op="conv2d", in_channels=16, out_channels=16, kernel=(3, 3), stride=(1, 1), padding=(1, 1),
                          groups=1, in_hw=(16, 16), dtype=dtype, post="bn+relu")


@pytest.fixture(scope="module")
def r20(tmp_path_factory):
    from edgeprune.compile.onnx_export import export_onnx
    from edgeprune.models import load_model

    m = load_model("resnet20-cifar10").eval()
    path = export_onnx(m, torch.zeros(1, 3, 32, 32), tmp_path_factory.mktemp("r20") / "r20.onnx")
    return m, path


# --------------------------------------------------------------------------- target, options, availability


def test_target_lists_fp32_and_fp16_only(target, backend):
    assert (target.backend, target.precisions, target.channel_multiple) == ("ort_cuda", ("fp32", "fp16"), 8)
    assert backend.emits_precisions == ("fp32", "fp16")
    assert backend.precision_support("fp16") == (True, "")
    ok, why = backend.precision_support("int8")
    assert not ok and "fp32 and fp16 only" in why
    with pytest.raises(BadInput, match="--int8 does not apply"):
        backend.compile_options(None, True)


def test_a_target_listing_int8_is_refused(tmp_path):
    from edgeprune.config import load_target

    f = tmp_path / "t.toml"
    f.write_text("name = 'x'\nbackend = 'ort_cuda'\nprecisions = ['fp32', 'int8']\n")
    with pytest.raises(BadInput, match="does not measure or emit int8"):
        load_target(f)


def test_options_are_checked_in_one_line(target):
    from edgeprune.backends.ort_cuda.options import OrtCudaOptions

    opts = OrtCudaOptions.from_target(target)
    assert (opts.device_id, opts.cudnn_conv_algo_search, opts.use_tf32, opts.layer_timing) == (0, "EXHAUSTIVE", False, "auto")
    for bad, match in (({"cudnn_conv_algo_search": "FAST"}, "must be one of EXHAUSTIVE, HEURISTIC, DEFAULT"),
                       ({"device_id": -1}, "device_id must be an integer >= 0"),
                       ({"precision": "int8"}, "precision must be one of fp32, fp16"),
                       ({"use_tf32": "yes"}, "use_tf32 must be true or false")):
        with pytest.raises(BadInput, match=match) as err:
            OrtCudaOptions.from_target(_with_options(target, **bad))
        assert "\n" not in str(err.value)


@no_cuda
def test_unavailable_here_with_the_one_line_reason(target):
    from edgeprune.backends import availability

    ok, why = availability(target)
    assert not ok
    assert why == ("needs onnxruntime-gpu and an NVIDIA GPU: CUDAExecutionProvider not in "
                   "onnxruntime.get_available_providers()")


def test_available_when_ort_lists_the_cuda_provider(target, backend, monkeypatch):
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert backend.availability(target) == (True, "")
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert not backend.availability(target)[0]


def test_cuda_provider_list(target):
    from edgeprune.backends.ort_cuda.session import providers

    (name, opts), fallback = providers(target)
    assert (name, fallback) == ("CUDAExecutionProvider", "CPUExecutionProvider")
    assert opts == {"device_id": "0", "cudnn_conv_algo_search": "EXHAUSTIVE", "use_tf32": "0", "do_copy_in_default_stream": "1"}
    (_, opts), _ = providers(_with_options(target, device_id=1, cudnn_conv_algo_search="HEURISTIC", use_tf32=True))
    assert (opts["device_id"], opts["cudnn_conv_algo_search"], opts["use_tf32"]) == ("1", "HEURISTIC", "1")
    assert providers(target, "cpu") == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match="provider must be one of"):
        providers(target, "rocm")


@no_cuda
def test_compress_refuses_in_one_line_and_writes_nothing(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "edgeprune", "compress", "--target", "gpu-ort-cuda", "--model", "resnet20-cifar10",
                        "--budget", "latency=0.7x", "--criterion", "l1", "--out", str(out)],
                       check=False, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert "CUDAExecutionProvider not in onnxruntime.get_available_providers()" in r.stderr
    assert len([ln for ln in r.stderr.splitlines() if ln.strip()]) == 1
    assert not out.exists()


# --------------------------------------------------------------------------- the profiler JSON


def test_parser_charges_cuda_kernels_to_their_nodes():
    """On a fixture hand-written from ORT's documented format (see tests/fixtures/ort_cuda_profile.md)."""
    from edgeprune.backends.ort_cuda.events import charge_runs, load_events

    events = load_events(FIXTURES / "ort_cuda_profile.json")
    table = {"/layer1/layer1.0/conv1/Conv": "layer1.0.conv1", "/layer1/layer1.0/relu/Relu": "layer1.0.conv1",
             "/linear/Gemm": "linear", "/layer1/layer1.0/relu/Relu_output_0": "layer1.0.conv1"}
    prof = charge_runs(events, table, known={"layer1.0.conv1", "linear"})
    assert prof.kernel_events == 7 and prof.device_timed
    assert prof.providers == {"CUDAExecutionProvider", "CPUExecutionProvider"}
    assert len(prof.runs) == 2
    first, second = prof.runs
    # the fused conv (named by ORT after its output tensor) launched two kernels: 21 + 4 us, not its 9 us host time
    assert first["layer1.0.conv1"] == pytest.approx(0.025)
    assert first["linear"] == pytest.approx(0.006)
    # the host-side Memcpy ran on the CPU provider and is charged to "other" with its host time
    assert first["other"] == pytest.approx(0.011)
    assert second["layer1.0.conv1"] == pytest.approx(0.023) and second["linear"] == pytest.approx(0.005)
    assert prof.nodes["/layer1/layer1.0/relu/Relu_output_0_nchwc"] == "layer1.0.conv1"
    assert prof.totals(skip=1) == [pytest.approx(0.023 + 0.005 + 0.010)]


def test_without_kernel_events_cuda_node_times_are_not_device_time():
    from edgeprune.backends.ort_cuda.events import charge_runs, load_events

    events = [e for e in load_events(FIXTURES / "ort_cuda_profile.json") if e.get("cat") != "Kernel"]
    prof = charge_runs(events, single="layer")
    assert prof.kernel_events == 0 and not prof.device_timed
    assert prof.runs[0]["layer"] == pytest.approx((9 + 3 + 11) / 1000)


def test_layer_names_from_ort_node_names():
    from edgeprune.backends.ort_cuda.events import OTHER, layer_of_event

    assert layer_of_event("/layer2/layer2.1/conv2/Conv_kernel_time") == "layer2.1.conv2"
    assert layer_of_event("/features/features.1/conv/conv.1/Conv_token_12_kernel_time") == "features.1.conv.1"
    assert layer_of_event("t_nchwc_kernel_time", {"t": "layer3.0.conv1"}) == "layer3.0.conv1"
    assert layer_of_event("/Relu_kernel_time") == OTHER
    assert layer_of_event("/layer1/layer1.0/conv1/Conv_kernel_time", known={"linear"}) == OTHER


def test_bad_profile_file_is_one_line(tmp_path):
    from edgeprune.backends.ort_cuda.events import load_events

    f = tmp_path / "p.json"
    f.write_text("{")
    with pytest.raises(BadInput, match="cannot read ORT profile"):
        load_events(f)


# --------------------------------------------------------------------------- the same code on ORT's CPU provider


def test_io_bound_run_on_the_cpu_provider(r20, target):
    from edgeprune.backends.ort_cuda.session import BoundRun, make_session

    _, path = r20
    run = BoundRun(make_session(path, target, provider="cpu"), target, "cpu")
    run()
    out = run.binding.copy_outputs_to_cpu()[0]
    assert out.shape == (1, 10) and np.isfinite(out).all()


def test_real_profile_of_a_whole_model_charges_every_layer(r20, target):
    from edgeprune.backends.ort_cuda.backend import layer_times
    from edgeprune.graph import channel_groups
    from edgeprune.profile.timing import TimingProtocol

    m, path = r20
    layers = list(channel_groups(m, torch.zeros(1, 3, 32, 32)).layers)
    times, prof = layer_times(path, target, layers, TimingProtocol.quick(), provider="cpu")
    assert prof.device_timed and prof.kernel_events == 0
    convs = [n for n in layers if "conv" in n]
    assert set(convs) <= set(times), sorted(set(convs) - set(times))
    total = sum(t.median for t in times.values())
    assert times.get("other") is None or times["other"].median < 0.5 * total


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_layer_timing_on_the_cpu_provider(target, dtype):
    from edgeprune.backends.ort_cuda.backend import time_layer_on
    from edgeprune.profile.timing import TimingProtocol

    timing, meta = time_layer_on(_sig(dtype), target, TimingProtocol.quick(), provider="cpu")
    assert meta["layer_timing"] == "nodes" and meta["precision"] == dtype
    assert 0 < timing.median <= meta["wall_ms"] * 1.5
    timing, meta = time_layer_on(_sig(dtype), _with_options(target, layer_timing="wall"), TimingProtocol.quick(), provider="cpu")
    assert meta["layer_timing"] == "wall" and timing.median > 0


def test_fp16_layer_graph_has_fp16_inputs_and_no_casts(tmp_path):
    import onnx

    from edgeprune.backends.ort_cuda.backend import layer_graph

    m = onnx.load(str(layer_graph(_sig("fp16"), tmp_path)))
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    assert not [n for n in m.graph.node if n.op_type == "Cast"]


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engine_on_the_cpu_provider_agrees_with_pytorch(r20, target, precision, tmp_path):
    from edgeprune.backends.ort_cuda.emit import emit_ort_cuda

    m, _ = r20
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    eng = emit_ort_cuda(m, target, tmp_path, x[:1], {"precision": precision}, provider="cpu")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["precision"] == precision and manifest["backend"] == "ort_cuda"
    assert eng.files["onnx"].name == ("model.fp16.onnx" if precision == "fp16" else "model.onnx")
    with torch.no_grad():
        ref = m(x).numpy()
    got = eng.run(x)
    rel = np.abs(got - ref).mean() / np.abs(ref).mean()
    assert rel < (5e-3 if precision == "fp16" else 1e-5), rel
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.99


def test_plan_precisions_choose_the_engine(r20, target, backend, tmp_path):
    import onnx

    m, _ = r20
    assert backend.plan_options({"conv1": "fp16", "linear": "fp32"}) == {"precision": "fp16"}
    assert backend.plan_options({"conv1": "fp32"}) == {}
    path, disabled = backend.engine_file(m, target, torch.zeros(1, 3, 32, 32), {"conv1": "fp16"}, None, tmp_path)
    assert path.name == "model.fp16.onnx" and disabled == []
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in onnx.load(str(path)).graph.initializer)
    path, _ = backend.engine_file(m, target, torch.zeros(1, 3, 32, 32), None, None, tmp_path / "b")
    assert path.name == "model.onnx"
    with pytest.raises(BadInput, match="--int8 does not apply"):
        from edgeprune.backends.ort_cuda.emit import emit_ort_cuda

        emit_ort_cuda(m, target, tmp_path / "c", torch.zeros(1, 3, 32, 32), {"quantize": {"calib": None}}, provider="cpu")


# --------------------------------------------------------------------------- on an NVIDIA GPU


@needs_cuda
@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_layer_timing_on_the_gpu(backend, target, dtype):
    from edgeprune.profile.timing import TimingProtocol

    timing, meta = backend.time_layer_detail(_sig(dtype), target, TimingProtocol.quick())
    assert timing.median > 0 and meta["layer_timing"] in ("kernels", "wall")


@needs_cuda
def test_whole_model_and_fp16_engine_on_the_gpu(r20, backend, target, tmp_path):
    from edgeprune.profile.timing import TimingProtocol

    m, path = r20
    assert backend.time_onnx(path, target, TimingProtocol.quick()).median > 0
    x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    eng = backend.emit(m, target, tmp_path, x[:1], {"precision": "fp16"})
    with torch.no_grad():
        ref = m(x).numpy()
    assert (eng.run(x).argmax(1) == ref.argmax(1)).mean() >= 0.99
