"""User models: factories with arguments, state_dict weights, torchvision/timm names, files that are not PyTorch."""
from __future__ import annotations

import pytest
import torch

from edgeprune.errors import BadInput, close_names
from edgeprune.models import load_model, parse_model_args


def test_model_args_are_typed() -> None:
    assert parse_model_args(["a=3", "b=0.5", "c=true", "d=False", "e=relu", "f=none", "g=1e-3"]) == {
        "a": 3, "b": 0.5, "c": True, "d": False, "e": "relu", "f": None, "g": 1e-3}
    assert parse_model_args({"a": 1}) == {"a": 1}
    with pytest.raises(BadInput, match="NAME=VALUE"):
        parse_model_args(["width"])


def test_factory_with_args() -> None:
    m = load_model("tests.factories:small_cnn", args=["width=4", "classes=3"])
    assert m[0].out_channels == 4 and m[-1].out_features == 3 and not m.training
    with pytest.raises(BadInput, match="does not take these --model-arg"):
        load_model("tests.factories:small_cnn", args=["depth=3"])
    with pytest.raises(BadInput, match="takes no --model-arg"):
        load_model("resnet20-cifar10", args=["depth=3"])


def test_weights_from_a_state_dict(tmp_path) -> None:
    src = load_model("tests.factories:small_cnn", args={"width": 4})
    with torch.no_grad():
        src[0].weight.add_(1.0)
    torch.save(src.state_dict(), tmp_path / "sd.pt")
    torch.save({"state_dict": {"module." + k: v for k, v in src.state_dict().items()}, "epoch": 3}, tmp_path / "ckpt.pt")
    torch.save({"model": src.state_dict()}, tmp_path / "model_key.pt")
    for name in ("sd.pt", "ckpt.pt", "model_key.pt"):
        m = load_model("tests.factories:small_cnn", args={"width": 4}, weights=tmp_path / name)
        assert torch.equal(m[0].weight, src[0].weight), name
    # a state_dict of other shapes or names: one line naming a few keys
    with pytest.raises(BadInput, match=r"other shapes: 0.weight \[4, 3, 3, 3\] in the file") as err:
        load_model("tests.factories:small_cnn", weights=tmp_path / "sd.pt")
    assert "\n" not in str(err.value)
    torch.save({"x." + k: v for k, v in src.state_dict().items()}, tmp_path / "renamed.pt")
    with pytest.raises(BadInput, match=r"missing 0.weight, .*unexpected x.0.weight"):
        load_model("tests.factories:small_cnn", args={"width": 4}, weights=tmp_path / "renamed.pt")
    # a pickled module is not a state_dict: refused without unpickling it
    torch.save(src, tmp_path / "full.pt")
    with pytest.raises(BadInput, match="cannot read weights .* as a state_dict"):
        load_model("tests.factories:small_cnn", args={"width": 4}, weights=tmp_path / "full.pt")
    with pytest.raises(BadInput, match="weights file not found"):
        load_model("tests.factories:small_cnn", weights=tmp_path / "missing.pt")
    # a state_dict given as --model says to use --weights
    with pytest.raises(BadInput, match="holds a state_dict, not a full module.*--weights"):
        load_model(str(tmp_path / "sd.pt"))


def test_weights_into_a_registered_model(tmp_path) -> None:
    dense = load_model("resnet20-cifar10", pretrained=False)
    torch.save(dense.state_dict(), tmp_path / "r20.pt")
    m = load_model("resnet20-cifar10", weights=tmp_path / "r20.pt")
    assert torch.equal(m.conv1.weight, dense.conv1.weight)


def test_onnx_file_as_model(tmp_path) -> None:
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"\x08\x07\x12\x07pytorch" + bytes(64))
    with pytest.raises(BadInput, match=r"model.onnx is an ONNX model: edgeprune needs the PyTorch model.*--model pkg.mod:factory"):
        load_model(str(onnx))
    other = tmp_path / "model.bin"
    other.write_bytes(b"\x08\x07\x12\x07pytorch" + bytes(64))  # an ONNX file by another name
    with pytest.raises(BadInput, match="is an ONNX model"):
        load_model(str(other))
    text = tmp_path / "model.txt"
    text.write_text("hello")
    with pytest.raises(BadInput, match=r"not a PyTorch file \(torch.save\)"):
        load_model(str(text))
    with pytest.raises(BadInput, match="is an ONNX model: --weights takes a state_dict"):
        load_model("tests.factories:small_cnn", weights=onnx)


def test_onnx_model_on_the_cli(tmp_path, capsys) -> None:
    from edgeprune.cli import main

    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"\x08\x07" + bytes(32))
    code = main(["compress", "--model", str(onnx), "--data", "cifar10-demo", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "needs the PyTorch model" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_timm_not_installed() -> None:
    import importlib.util

    if importlib.util.find_spec("timm") is not None:
        pytest.skip("timm is installed here")
    with pytest.raises(BadInput, match=r"timm:NAME needs timm, which is not installed \(pip install timm\)"):
        load_model("timm:resnet18")


def test_torchvision_by_name(torchvision) -> None:
    m = load_model("torchvision:mobilenet_v2", args=["num_classes=7", "width_mult=0.5"])
    assert m.classifier[-1].out_features == 7
    assert m(torch.zeros(1, 3, 32, 32)).shape == (1, 7)
    with pytest.raises(BadInput, match="unknown torchvision model 'mobilnet_v2'; did you mean mobilenet_v2"):
        load_model("torchvision:mobilnet_v2")
    with pytest.raises(BadInput, match="never downloads"):
        load_model("torchvision:resnet18", args=["weights=IMAGENET1K_V1"])
    with pytest.raises(BadInput, match="does not take these --model-arg"):
        load_model("torchvision:resnet18", args=["depth=3"])


def test_torchvision_weights(torchvision, tmp_path) -> None:
    src = torchvision.models.get_model("resnet18", weights=None, num_classes=5)
    torch.save(src.state_dict(), tmp_path / "r18.pt")
    m = load_model("torchvision:resnet18", args={"num_classes": 5}, weights=tmp_path / "r18.pt")
    assert torch.equal(m.fc.weight, src.fc.weight)
    with pytest.raises(BadInput, match=r"other shapes: fc.weight \[5, 512\] in the file, \[1000, 512\] in the model"):
        load_model("torchvision:resnet18", weights=tmp_path / "r18.pt")


def test_close_names() -> None:
    assert "resnet18" in close_names("resnt18", ["resnet18", "resnet34", "vgg11"])
    assert close_names("zzz", ["resnet18"]) == ""
