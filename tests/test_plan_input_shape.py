"""plan at the model's own input size, on the profile file `profile` and `compress` use (issue #24)."""
from __future__ import annotations

import json

import pytest
import torch

from edgeprune.cli import main
from edgeprune.profile import default_profile_path, profile_input_size, profile_model_name
from tests.tiny import TinyNet

PROFILE = ["profile", "--target", "cpu-ort", "--model", "tests.tiny:tiny_net", "--quick", "--calibration", "1",
           "--grid", "aligned", "-q"]


def test_one_profile_name_for_every_command():
    assert profile_model_name("resnet20-cifar10") == "resnet20-cifar10"  # the zoo
    assert profile_model_name("runs/best.pt") == "best" and profile_model_name("best.pth") == "best"
    assert profile_model_name("tests.tiny:tiny_net") == "tests.tiny:tiny_net"  # a factory stays whole
    assert profile_model_name("torchvision:mobilenet_v2") == "torchvision:mobilenet_v2"
    # a module object (Python API) and its class name (compress records a module by it) agree
    assert profile_model_name(TinyNet()) == profile_model_name("TinyNet") == "tinynet"
    assert default_profile_path("cpu-ort", profile_model_name("tests.tiny:tiny_net"), "d").name == "cpu-ort--tests.tiny_tiny_net.json"
    # keyed by the input size (after batch and channels) the example has: the name every command computes
    size = profile_input_size(torch.zeros(1, 3, 64, 48))
    assert size == (64, 48) and profile_input_size(torch.zeros(1, 20)) == (20,) and profile_input_size(None) is None
    assert profile_input_size((torch.zeros(1, 3, 8, 8), torch.zeros(1, 4))) == (8, 8)
    assert default_profile_path("cpu-ort", "tests.tiny:tiny_net", "d", size).name == "cpu-ort--tests.tiny_tiny_net--64x48.json"


@pytest.fixture(scope="module")
def profiles_64(tmp_path_factory):
    d = tmp_path_factory.mktemp("profiles")
    assert main([*PROFILE, "--input-shape", "1,3,64,64", "--profiles", str(d)]) == 0
    assert [p.name for p in d.iterdir()] == ["cpu-ort--tests.tiny_tiny_net--64x64.json"]
    return d


def _plan(d, capsys, *extra: str) -> dict:
    code = main(["plan", "--model", "tests.tiny:tiny_net", "--target", "cpu-ort", "--budget", "latency=0.6x",
                 "--criterion", "l1", "--profiles", str(d), "--json", "-q", *extra])
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out)


def test_plan_at_the_profiled_input_shape_finds_the_profile(profiles_64, capsys, monkeypatch):
    import edgeprune.profile as prof

    def no_measuring(*a, **k):
        raise AssertionError("plan measured a new profile instead of reading the one `profile` wrote")

    monkeypatch.setattr(prof, "profile", no_measuring)
    before = sorted(p.name for p in profiles_64.iterdir())
    res = _plan(profiles_64, capsys, "--input-shape", "1,3,64,64")
    assert res["targets"]["cpu-ort"]["predicted"] <= res["targets"]["cpu-ort"]["limit"]
    # without --input-shape, plan takes the shape the profile was measured at (not a 32 px guess)
    again = _plan(profiles_64, capsys)
    assert again["targets"]["cpu-ort"]["dense"] == pytest.approx(res["targets"]["cpu-ort"]["dense"])
    assert sorted(p.name for p in profiles_64.iterdir()) == before


def test_plan_input_shape_is_checked(profiles_64, capsys):
    assert main(["plan", "--model", "tests.tiny:tiny_net", "--target", "cpu-ort", "--budget", "latency=0.6x",
                 "--input-shape", "1x3xbig", "--profiles", str(profiles_64), "-q"]) == 2
    assert "--input-shape" in capsys.readouterr().err
    # a data criterion without data at a non-demo size says what to pass (not 32 px demo images at 64 px)
    assert main(["plan", "--model", "tests.tiny:tiny_net", "--target", "cpu-ort", "--budget", "latency=0.6x",
                 "--input-shape", "1,3,64,64", "--profiles", str(profiles_64), "-q"]) == 2
    err = capsys.readouterr().err
    assert "needs data" in err and err.count("\n") == 1
