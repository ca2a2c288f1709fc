"""Quantisation: int8 QDQ engines with exclusions, calibration warnings, unquantisable ops, sensitivity, QAT, fp16."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from edgeprune.backends.ort.runtime import make_session
from edgeprune.compile.onnx_export import export_onnx
from edgeprune.config import get_target
from edgeprune.errors import BadInput
from edgeprune.quant import (
    QuantWarning,
    count_precisions,
    prepare_qat,
    quantize_onnx,
    runtime_precisions,
    sensitivity,
    strip_qat,
    to_fp16_onnx,
)
from edgeprune.quant.names import module_path


class Tiny(nn.Module):
    """Conv-BN-ReLU, a residual block, pooling and a classifier: the ops of the CIFAR ResNets, small."""

    def __init__(self, sin: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.linear = nn.Linear(8, 10)
        self.sin = sin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.bn1(self.conv1(x)))
        if self.sin:
            a = torch.sin(a)
        b = F.relu(self.bn2(self.conv2(a)) + a)
        return self.linear(F.adaptive_avg_pool2d(b, 1).flatten(1))


def _tiny(sin: bool = False) -> nn.Module:
    torch.manual_seed(0)
    m = Tiny(sin)
    with torch.no_grad():
        for bn in (m.bn1, m.bn2):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
    return m.eval()


@pytest.fixture(scope="module")
def target():
    return get_target("cpu-ort")


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    return export_onnx(_tiny(), torch.randn(1, 3, 16, 16), d / "tiny.onnx")


def _calib(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 16, 16)).astype(np.float32)


def test_module_path_from_node_names():
    assert module_path("/layer1/layer1.0/conv1/Conv") == "layer1.0.conv1"
    assert module_path("/layer2/layer2.0/shortcut/Conv") == "layer2.0.shortcut"
    assert module_path("/conv1/Conv") == "conv1"
    assert module_path("/Relu") is None


def test_module_path_of_nested_sequentials():
    # torchvision MobileNetV2: the scope of features.1.conv.1 is "conv.1" under "conv", not a child "conv.1" of it
    assert module_path("/features/features.1/conv/conv.1/Conv") == "features.1.conv.1"
    assert module_path("/features/features.11/conv/conv.0/conv.0.0/Conv") == "features.11.conv.0.0"
    assert module_path("/features/features.0/features.0.1/features.0.1.0/Conv") == "features.0.1.0"
    assert module_path("/stage/blocks.0/conv/Conv") == "stage.blocks.0.conv"  # an uncalled ModuleList's item
    # a child named like its parent's tail: the model's module names settle the reading
    assert module_path("/x/x.conv/conv.0/Conv", known={"x", "x.conv", "x.conv.conv", "x.conv.conv.0"}) == "x.conv.conv.0"


class _Nested(nn.Module):
    """MobileNetV2's naming: Sequentials of blocks whose ``conv`` is a Sequential of Sequentials."""

    def __init__(self) -> None:
        super().__init__()
        def block(c: int) -> nn.Module:
            b = nn.Module()
            b.conv = nn.Sequential(nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU()), nn.Conv2d(c, c, 1))
            b.forward = lambda x: x + b.conv(x)
            return b
        self.features = nn.Sequential(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()), block(8), block(8))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(8 * 16 * 16, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def test_mixed_engine_of_nested_module_names(target, tmp_path):
    """The default compress path: a plan keeps nested layers fp32; every one maps to its node (issue #24)."""
    from edgeprune.backends.base import onnx_engine_file

    torch.manual_seed(0)
    m = _Nested().eval()
    layers = [n for n, mod in m.named_modules() if isinstance(mod, (nn.Conv2d, nn.Linear))]
    assert "features.1.conv.0.0" in layers and "features.2.conv.1" in layers
    fp32 = ["features.1.conv.0.0", "features.1.conv.1", "features.2.conv.1"]
    precisions = {n: "fp32" if n in fp32 else "int8" for n in layers}
    path, disabled = onnx_engine_file(m, target, torch.randn(1, 3, 16, 16), precisions, _calib(100), tmp_path)
    assert disabled == ["WeightBiasQuantization"]
    assert count_precisions(path) == precisions


def test_every_torchvision_mobilenet_v2_node_maps_to_its_module(torchvision, tmp_path):
    import onnx

    from edgeprune.quant.names import layer_of_node

    m = torchvision.models.mobilenet_v2(num_classes=10).eval()
    p = export_onnx(m, torch.randn(1, 3, 64, 64), tmp_path / "mv2.onnx")
    weighted = {n for n, mod in m.named_modules() if isinstance(mod, (nn.Conv2d, nn.Linear))}
    mapped = {layer_of_node(n) for n in onnx.load(str(p)).graph.node if n.op_type in ("Conv", "Gemm")}
    assert mapped == weighted


def test_plan_layer_matching_no_node_is_an_internal_error(target, tmp_path):
    """A plan's layer that matches no exported node is edgeprune's bug: InternalError (exit 3), not BadInput (exit 2)."""
    from edgeprune.backends.base import onnx_engine_file
    from edgeprune.errors import EdgepruneError, InternalError

    with pytest.raises(InternalError, match="matches no node") as info:
        onnx_engine_file(_tiny(), target, torch.randn(1, 3, 16, 16), {"conv1": "int8", "conv9": "fp32"}, _calib(100), tmp_path)
    assert not isinstance(info.value, EdgepruneError)
    assert not (tmp_path / "model.int8.onnx").exists()


def test_exclusion_keeps_fp32_nodes(tiny_onnx, target, tmp_path):
    q = quantize_onnx(tiny_onnx, tmp_path / "t.int8.onnx", target, calib=_calib(128), exclude=["conv2"])
    assert q.format == "QDQ U8S8 per-channel reduce_range"
    assert q.excluded_nodes == ["/conv2/Conv"]
    assert "WeightBiasQuantization" in q.disabled_optimizers
    # the file has the precisions the plan asked for
    assert count_precisions(q.path) == {"conv1": "int8", "conv2": "fp32", "linear": "int8"}
    # ... and so does the graph ORT really runs, with the optimiser disabled
    rt = runtime_precisions(q.path, target, q.disabled_optimizers)
    assert rt["conv2"] == "fp32" and rt["conv1"] == "int8"
    # the session made with the disabled optimiser runs and stays close to fp32
    x = _calib(4, seed=1)
    s8 = make_session(q.path, target, disabled_optimizers=q.disabled_optimizers)
    s32 = make_session(tiny_onnx, target)
    for i in range(4):
        a = s8.run(None, {"input": x[i : i + 1]})[0]
        b = s32.run(None, {"input": x[i : i + 1]})[0]
        assert np.isfinite(a).all() and np.abs(a - b).max() < 0.1 * (np.abs(b).max() + 1e-3) + 0.05


def test_no_exclusion_is_all_int8(tiny_onnx, target, tmp_path):
    q = quantize_onnx(tiny_onnx, tmp_path / "t.int8.onnx", target, calib=_calib(128))
    assert q.disabled_optimizers == [] and q.excluded_nodes == []
    assert set(count_precisions(q.path).values()) == {"int8"}


def test_exclude_unknown_layer_is_an_error(tiny_onnx, target, tmp_path):
    with pytest.raises(BadInput, match="matches no node"):
        quantize_onnx(tiny_onnx, tmp_path / "t.int8.onnx", target, calib=_calib(128), exclude=["conv9"])
    assert not (tmp_path / "t.int8.onnx").exists()  # nothing half-written


def test_few_calibration_samples_warn(tiny_onnx, target, tmp_path):
    with pytest.warns(QuantWarning, match="only 20 calibration samples"):
        q = quantize_onnx(tiny_onnx, tmp_path / "t.int8.onnx", target, calib=_calib(20))
    assert any("calibration samples" in w for w in q.warnings)


def test_random_calibration_for_timing_warns(tiny_onnx, target, tmp_path):
    with pytest.warns(QuantWarning, match="random data"):
        q = quantize_onnx(tiny_onnx, tmp_path / "t.int8.onnx", target)  # calib=None: the profiler's case
    assert q.random_calibration and q.path.exists()
    make_session(q.path, target).run(None, {"input": _calib(1)})


def test_calibration_shape_mismatch_is_an_error(tiny_onnx, target, tmp_path):
    with pytest.raises(BadInput, match="does not fit"):
        quantize_onnx(tiny_onnx, tmp_path / "t.int8.onnx", target, calib=np.zeros((128, 3, 8, 8), np.float32))


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_histogram_calibration_methods(tiny_onnx, target, tmp_path, method):
    q = quantize_onnx(tiny_onnx, tmp_path / "t.int8.onnx", target, calib=_calib(100), method=method)
    assert q.method == method and set(count_precisions(q.path).values()) == {"int8"}


def test_unquantisable_op_stays_fp32_with_a_warning(target, tmp_path):
    import onnx

    p = export_onnx(_tiny(sin=True), torch.randn(1, 3, 16, 16), tmp_path / "sin.onnx")
    with pytest.warns(QuantWarning, match=r"cannot quantise op Sin \(1 node: '/Sin'\): it stays fp32"):
        q = quantize_onnx(p, tmp_path / "sin.int8.onnx", target, calib=_calib(128))
    assert q.unquantizable_nodes == ["/Sin"]
    g = onnx.load(str(q.path)).graph
    sin = next(n for n in g.node if n.op_type == "Sin")
    producers = {o: n.op_type for n in g.node for o in n.output}
    consumers = [n.op_type for n in g.node if sin.output[0] in n.input]
    assert producers[sin.input[0]] == "DequantizeLinear"  # float in ...
    assert all(c != "DequantizeLinear" for c in consumers)  # ... float out
    assert set(count_precisions(q.path).values()) == {"int8"}
    out = make_session(q.path, target).run(None, {"input": _calib(1)})[0]
    assert np.isfinite(out).all()


@pytest.mark.parametrize("kind", ["hawq", "measured"])
def test_sensitivity_is_finite_per_layer(kind):
    m = _tiny()
    x, y = torch.randn(32, 3, 16, 16), torch.randint(0, 10, (32,))
    s = sensitivity(m, (x, y), kind=kind, batches=2, batch_size=16, probes=2)
    assert set(s) == {"conv1", "conv2", "linear"}
    assert all(math.isfinite(v) for v in s.values())
    if kind == "hawq":
        assert all(v >= 0 for v in s.values())
    sub = sensitivity(m, (x, y), kind=kind, layers=["conv2"], batches=1, batch_size=16, probes=1)
    assert set(sub) == {"conv2"}
    with pytest.raises(BadInput):
        sensitivity(m, (x, y), kind="nope")


def test_fake_quant_model_matches_int8_engine(target, tmp_path):
    from edgeprune.data import load_data
    from edgeprune.models import load_model

    data = load_data("cifar10-demo")
    model = load_model("resnet20-cifar10")
    calib = data.train.sample(64)
    p = export_onnx(model, calib[:1], tmp_path / "r20.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QuantWarning)
        q = quantize_onnx(p, tmp_path / "r20.int8.onnx", target, calib=calib)
    sess = make_session(q.path, target)
    x = data.test.example(100)
    engine = np.concatenate([sess.run(None, {"input": x[i : i + 1].numpy()})[0] for i in range(len(x))])
    fq = prepare_qat(model, calib=calib, target=target)
    with torch.no_grad():
        fake = fq(x).numpy()
        ref = model(x).numpy()
    agree = (engine.argmax(1) == fake.argmax(1)).mean()
    assert agree >= 0.97, agree
    # closer to the engine than the float model is
    assert np.abs(engine - fake).mean() < np.abs(engine - ref).mean()


def test_qat_trains_through_fake_quant():
    m = _tiny()
    fq = prepare_qat(m, calib=torch.randn(64, 3, 16, 16))
    fq.train()
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    loss = F.cross_entropy(fq(x), y)
    loss.backward()
    float_model = strip_qat(fq)
    assert float_model.conv1.weight.grad is not None and float_model.conv1.weight.grad.abs().sum() > 0
    opt = torch.optim.SGD(fq.parameters(), lr=0.1)
    before = float_model.conv1.weight.detach().clone()
    opt.step()
    assert not torch.equal(before, float_model.conv1.weight)  # the float model is what QAT trains
    assert m.conv1.weight.grad is None  # the original is untouched
    # exclusion: the excluded layer keeps float weights
    fq2 = prepare_qat(m, exclude=["conv2"], calib=torch.randn(64, 3, 16, 16))
    layers = {getattr(mod, "layer", None) for mod in fq2.modules()}
    assert "conv1" in layers and "conv2" not in layers


def test_fp16_conversion_agrees_numerically(tiny_onnx, tmp_path):
    p16 = to_fp16_onnx(tiny_onnx, tmp_path / "t.fp16.onnx")
    import onnx

    inits = onnx.load(str(p16)).graph.initializer
    assert all(i.data_type != onnx.TensorProto.FLOAT for i in inits)
    x = _calib(8, seed=3)
    s16 = ort.InferenceSession(str(p16), providers=["CPUExecutionProvider"])
    s32 = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    a = np.concatenate([s16.run(None, {"input": x[i : i + 1]})[0] for i in range(8)])
    b = np.concatenate([s32.run(None, {"input": x[i : i + 1]})[0] for i in range(8)])
    assert a.dtype == np.float32
    assert np.abs(a - b).max() <= 1e-2 * max(1.0, np.abs(b).max())
    assert (a.argmax(1) == b.argmax(1)).all()
    # fp16 I/O variant
    p16b = to_fp16_onnx(tiny_onnx, tmp_path / "t.fp16io.onnx", keep_io_fp32=False)
    s = ort.InferenceSession(str(p16b), providers=["CPUExecutionProvider"])
    out = s.run(None, {"input": x[:1].astype(np.float16)})[0]
    assert out.dtype == np.float16 and np.abs(out.astype(np.float32) - b[:1]).max() <= 2e-2 * max(1.0, np.abs(b).max())


def test_profiler_layer_graph_with_two_inputs_and_random_calibration(target, tmp_path):
    """The profiler times int8 layer variants (conv + residual add + relu: two graph inputs) with calib=None."""
    import onnx

    from edgeprune.backends.ort.runtime import random_feeds
    from edgeprune.graph.signature import LayerSignature
    from edgeprune.profile.layer_onnx import layer_onnx

    sig = LayerSignature("conv2d", 16, 16, (3, 3), (1, 1), (1, 1), 1, (8, 8), "int8", "bn+add+relu")
    p = tmp_path / "layer.onnx"
    onnx.save(layer_onnx(sig), str(p))
    with pytest.warns(QuantWarning, match="random data"):
        q = quantize_onnx(p, tmp_path / "layer.int8.onnx", target)
    assert count_precisions(q.path) == {"layer/Conv": "int8"}
    sess = make_session(q.path, target)
    assert sess.run(None, random_feeds(sess))[0].shape == (1, 16, 8, 8)


def test_shared_zero_biases_are_quantised_like_any_bias(tmp_path, caplog):
    """The exporter shares equal folded biases (fresh BNs: all zero) through Identity nodes; each conv's bias must
    still reach ORT's quantiser as an initializer (it used to warn once per conv and leave the bias fp32)."""
    import logging

    import onnx
    from torch import nn

    from edgeprune.compile.onnx_export import export_onnx
    from edgeprune.config import get_target
    from edgeprune.quant.ort_int8 import quantize_onnx

    torch.manual_seed(0)
    layers = [nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU()]
    for _ in range(3):
        layers += [nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU()]
    model = nn.Sequential(*layers).eval()
    fp32 = export_onnx(model, torch.zeros(1, 3, 16, 16), tmp_path / "m.onnx")
    shared = [n for n in onnx.load(str(fp32)).graph.node if n.op_type == "Identity"]
    with caplog.at_level(logging.WARNING):
        q = quantize_onnx(fp32, tmp_path / "m.int8.onnx", get_target("cpu-ort"), calib=np.random.default_rng(0)
                          .standard_normal((16, 3, 16, 16)).astype(np.float32))
    assert not [r for r in caplog.records if "to be an initializer" in r.getMessage()]
    g = onnx.load(str(q.path)).graph
    assert not [n for n in g.node if n.op_type == "Identity"]
    assert sum(n.op_type == "DequantizeLinear" for n in g.node) >= 2 * 4  # weights and biases of every conv
    assert shared  # the situation this guards: the exporter shared the equal biases


def test_the_quantisers_per_weight_noise_is_dropped_and_other_warnings_kept() -> None:
    import logging

    from edgeprune.quant.ort_int8 import _DropPreprocessHint

    def rec(msg: str) -> logging.LogRecord:
        return logging.LogRecord("root", logging.WARNING, __file__, 1, msg, None, None)

    f = _DropPreprocessHint()
    assert not f.filter(rec("Axis 1 is out-of-range for weight 'features.1.0.block.2.weight' with rank 1"))
    assert not f.filter(rec("Please consider to run pre-processing before quantization. Refer to example"))
    assert f.filter(rec("Inference failed or unsupported type to quantize for tensor 'x'"))


def test_unquantisable_ops_are_one_warning_per_model():
    """ConvNeXt has a Div and an Erf per block: one line names the ops and their count, not one line per node."""
    from onnx import TensorProto, helper

    from edgeprune.quant.ort_int8 import _unquantizable_nodes

    nodes = [helper.make_node("Sin", ["x"], ["a"], name="s1"), helper.make_node("Sin", ["a"], ["b"], name="s2"),
             helper.make_node("Erf", ["b"], ["y"], name="e1")]
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1]) for n in ("x", "y")]
    model = helper.make_model(helper.make_graph(nodes, "g", io[:1], io[1:]))
    msgs: list[str] = []
    with pytest.warns(QuantWarning) as caught:
        assert _unquantizable_nodes(model, ["s2"], msgs) == ["s1", "e1"]
    assert len(caught) == 1 and msgs == ["ONNX Runtime cannot quantise op Sin, Erf (2 nodes: 's1', 'e1'): they stay fp32"]
