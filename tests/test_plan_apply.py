"""Plan here, apply there: compress writes weights.pt + a self-describing plan.json, ``edgeprune apply`` applies a
plan, ``load_pruned`` rebuilds the pruned model without unpickling; --freeze, --max-drop and --config."""
from __future__ import annotations

import json

import pytest
import torch

import edgeprune as ep
from edgeprune.cli import main
from edgeprune.errors import AccuracyDropped, BadInput
from edgeprune.pipeline import CompressConfig, compress
from edgeprune.profile.timing import TimingProtocol
from tests.tiny import tiny_net, tiny_npz

QUICK = CompressConfig(planner="uniform", epochs=0.25, batch_size=32, protocol=TimingProtocol.quick(), final_repeats=1)
FACTORY = "tests.factories:small_cnn"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """One tiny compress run (MACs budget: deterministic), shared by the tests that read its files."""
    tmp = tmp_path_factory.mktemp("run")
    data = tiny_npz(tmp / "d.npz", n=160)
    cfg = CompressConfig(**{**QUICK.__dict__, "model_args": {"width": 16}, "freeze": ("0",)})
    res = compress(FACTORY, data, "cpu-ort", "macs=0.6x", out=tmp / "out", config=cfg)
    return tmp, res


def test_compress_writes_weights_and_a_plan_to_apply(run_dir) -> None:
    tmp, res = run_dir
    out = tmp / "out"
    assert (out / "weights.pt").exists() and (out / "model.pt").exists()
    doc = json.loads((out / "plan.json").read_text())
    src = doc["source"]
    assert src["model"] == FACTORY and src["model_args"] == {"width": 16} and src["input_shape"][1:] == [3, 16, 16]
    assert src["targets"] == ["cpu-ort"] and src["budget"] == "macs=0.6x" and src["edgeprune"] == ep.__version__
    # --freeze 0: the group of the first conv's outputs is never pruned
    assert all(not gid.startswith("0") for gid in doc["keep"]) and doc["keep"]
    small = ep.load_pruned(ep.load_model(FACTORY, args={"width": 16}), out / "plan.json", out / "weights.pt")
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(small(x), res.model(x), atol=1e-5)
    # the dense spec as a string works too, its arguments from the plan
    assert sum(p.numel() for p in ep.load_pruned(FACTORY, out / "plan.json").parameters()) == \
        sum(p.numel() for p in small.parameters())


def test_a_plan_for_another_model_is_refused(run_dir) -> None:
    tmp, _ = run_dir
    with pytest.raises(BadInput, match=r"does not match the model: \d has 16 channels in the plan, 8 in the model"):
        ep.load_pruned(ep.load_model(FACTORY, args={"width": 8}), tmp / "out" / "plan.json")
    with pytest.raises(BadInput, match="does not match the model: groups not in the model"):
        ep.load_pruned(tiny_net(), tmp / "out" / "plan.json")
    with pytest.raises(BadInput, match=r"other shapes"):
        ep.load_pruned(ep.load_model(FACTORY, args={"width": 16}), tmp / "out" / "plan.json",
                       {k: v[:1] if v.dim() else v for k, v in torch.load(tmp / "out" / "weights.pt").items()})
    (tmp / "notaplan.json").write_text('{"a": 1}')
    with pytest.raises(BadInput, match="is not an edgeprune plan"):
        ep.load_pruned(tiny_net(), tmp / "notaplan.json")


def test_apply_on_the_cli(run_dir, capsys) -> None:
    tmp, res = run_dir
    out = tmp / "applied"
    code = main(["apply", "--plan", str(tmp / "out" / "plan.json"), "--data", str(tmp / "d.npz"), "--epochs", "0",
                 "--quick", "--out", str(out), "--json"])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["plan"]["planner"] == "file" and report["budget"] == "macs=0.6x" and report["budget_met"]
    assert report["compressed"]["params"] == res.compressed.params
    assert (out / "model.onnx").exists() and (out / "weights.pt").exists()
    # no data: checked on random inputs, the plan's own input shape
    code = main(["apply", "--plan", str(tmp / "out" / "plan.json"), "--quick", "--out", str(tmp / "applied2")])
    assert code == 0, capsys.readouterr().err
    # a plan that does not fit the model given: one line, exit 2, nothing written
    capsys.readouterr()
    code = main(["apply", "--plan", str(tmp / "out" / "plan.json"), "--model", FACTORY, "--model-arg", "width=8",
                 "--quick", "-q", "--out", str(tmp / "bad")])
    err = capsys.readouterr().err
    assert code == 2 and "does not match the model" in err and len(err.strip().splitlines()) == 1
    assert not (tmp / "bad").exists()


def test_max_drop_guard(tmp_path, monkeypatch) -> None:
    import dataclasses

    from edgeprune.pipeline import outcome

    real = outcome.figures

    def worse(run, model, *a, **k):  # the compressed model scores 5 points below what it measures
        f = real(run, model, *a, **k)
        return f if model is run.dense else dataclasses.replace(f, top1=f.top1 - 5.0)

    monkeypatch.setattr(outcome, "figures", worse)
    data = tiny_npz(tmp_path / "d.npz", n=160)
    cfg = CompressConfig(**{**QUICK.__dict__, "max_drop": "4.9pt", "epochs": 0.0})
    ok = compress(tiny_net(), data, "cpu-ort", "macs=0.5x", out=tmp_path / "ok",
                  config=dataclasses.replace(cfg, max_drop="100pt"))
    assert ok.report["accuracy_guard"]["passed"]
    with pytest.raises(AccuracyDropped, match=r"top-1 dropped .* more than --max-drop 4.9pt \(4.90 pt\)") as err:
        compress(tiny_net(), data, "cpu-ort", "macs=0.5x", out=tmp_path / "run", config=cfg)
    guard = json.loads((tmp_path / "run" / "report.json").read_text())["accuracy_guard"]
    assert guard["passed"] is False and guard["allowed_pt"] == 4.9 and (tmp_path / "run" / "model.onnx").exists()
    assert err.value.exit_code == 1
    for bad in ("1 point!", "-1pt", "x"):
        with pytest.raises(BadInput, match="cannot parse --max-drop"):
            CompressConfig(max_drop=bad)
    from edgeprune.pipeline.config import parse_max_drop

    assert parse_max_drop("1pt") == (1.0, False) and parse_max_drop("0.5%") == (0.5, True) and parse_max_drop("2") == (2.0, False)
    with pytest.raises(BadInput, match="--max-drop needs data"):
        compress(tiny_net(), None, "cpu-ort", "macs=0.5x", out=tmp_path / "nodata",
                 config=CompressConfig(criterion="l1", max_drop="1pt"), input_shape=(1, 3, 32, 32))
    assert not (tmp_path / "nodata").exists()


def test_freeze_unknown_name_lists_close_names(tmp_path) -> None:
    data = tiny_npz(tmp_path / "d.npz", n=64)
    cfg = CompressConfig(**{**QUICK.__dict__, "freeze": ("conv5",)})
    with pytest.raises(BadInput, match=r"--freeze 'conv5' matches no layer or group; did you mean conv"):
        compress(tiny_net(), data, "cpu-ort", "macs=0.5x", out=tmp_path / "run", config=cfg)
    assert not (tmp_path / "run").exists()  # checked before any measurement, no state/ left


def test_config_file_under_typed_flags(tmp_path, monkeypatch) -> None:
    from edgeprune.cli import build_parser
    from edgeprune.commands import compress as cmd
    from edgeprune.commands.config_file import resolve_settings

    toml = tmp_path / "c.toml"
    toml.write_text('budget = "macs=0.5x"\nepochs = 1\nmax-drop = "1pt"\nfreeze = ["conv1"]\nno_kd = true\n'
                    'model-arg = {width = 16}\nquick = true\n')
    args = resolve_settings(build_parser().parse_args(["compress", "--config", str(toml), "--epochs", "3"]))
    assert args.budget == "macs=0.5x" and args.epochs == 3.0 and args.max_drop == "1pt" and args.freeze == ["conv1"]
    assert args.no_kd is True and args.model_arg == ["width=16"] and args.quick and args.target == "cpu-ort"
    cfg = cmd.config_from_args(args)
    assert cfg.epochs == 3.0 and cfg.kd is False and cfg.model_args == {"width": 16} and cfg.freeze == ("conv1",)
    # no --config: the defaults
    args = resolve_settings(build_parser().parse_args(["compress"]))
    assert args.budget == "latency=0.6x" and args.epochs == 2.0 and args.freeze == [] and args.model == "resnet20-cifar10"
    # an unknown key, a bad value: one line, exit 2
    for text, msg in (('budgt = "macs=0.5x"\n', "unknown key 'budgt' in config file .*; did you mean budget"),
                      ('epochs = "many"\n', "config key 'epochs': bad value 'many' for --epochs"),
                      ('planner = "best"\n', "config key 'planner': 'best' is not one of auto, milp, uniform"),
                      ('quick = 1\n', "config key 'quick': --quick is true or false")):
        toml.write_text(text)
        with pytest.raises(BadInput, match=msg):
            resolve_settings(build_parser().parse_args(["compress", "--config", str(toml)]))
    with pytest.raises(BadInput, match="config file not found"):
        resolve_settings(build_parser().parse_args(["compress", "--config", str(tmp_path / "none.toml")]))
