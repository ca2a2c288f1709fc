"""compress picks how to price a model: its own table when small, the device cost model when the table is huge."""
from __future__ import annotations

from types import SimpleNamespace

import torch

from edgeprune.config import get_target
from edgeprune.graph import channel_groups
from edgeprune.models import load_model
from edgeprune.profile.profiler import EXHAUSTIVE_LIMIT, exhaustive_size
from edgeprune.ui import QUIET


def _run(model, shape, tmp_path):
    from edgeprune.config import get_target

    example = torch.zeros(shape)
    tgt = get_target("cpu-ort")
    return SimpleNamespace(graph=channel_groups(model, example), target=tgt, model_name="m", ui=QUIET,
                           config=SimpleNamespace(profiles=str(tmp_path)))


def test_exhaustive_size_counts_the_table_compress_would_measure():
    model = load_model("resnet20-cifar10")
    n = exhaustive_size(channel_groups(model, torch.zeros(1, 3, 32, 32)), get_target("cpu-ort"))
    assert 100 < n < EXHAUSTIVE_LIMIT  # ResNet-20 stays on its exact table


def test_a_huge_table_builds_the_device_model_instead(tmp_path, monkeypatch):
    """compress and local_profile (what the demo and the headline benchmark call) take the same road: the exact
    table for a small model, the device cost model (built once) when the exhaustive table is huge."""
    from edgeprune.costmodel import calibrate, measure
    from edgeprune.costmodel import model as dmodel
    from edgeprune.pipeline import search
    from edgeprune.profile import profiler

    built, priced = [], []
    monkeypatch.setattr(measure, "build_device_model",
                        lambda target, **kw: built.append(target.name) or SimpleNamespace(path=tmp_path / "dm.json"))
    monkeypatch.setattr(dmodel, "load_device_model", lambda path, **kw: "device model")
    monkeypatch.setattr(calibrate, "calibrate_model",
                        lambda m, ex, t, dm, **kw: priced.append(kw["model_name"]) or SimpleNamespace(path=tmp_path / "p.json"))
    model, example = load_model("resnet20-cifar10"), torch.zeros(1, 3, 32, 32)
    run = _run(model, (1, 3, 32, 32), tmp_path)
    run.dense, run.example = model, example
    assert search._device_model_profile(run) is None and not built  # small: the exact table
    monkeypatch.setattr(profiler, "EXHAUSTIVE_LIMIT", 10)
    assert search._device_model_profile(run) is None and not built  # a minute or two of exact table: preferred
    monkeypatch.setattr(profiler, "EXACT_PREFERRED", 5)
    assert search._device_model_profile(run) == tmp_path / "p.json" and built == ["cpu-ort"] and priced == ["m"]
    assert profiler.local_profile(model, "cpu-ort", "m2", profiles=tmp_path, example=example) == tmp_path / "p.json"
    assert built == ["cpu-ort"] * 2 and priced == ["m", "m2"]
    # a stored device model prices a big table without building; a small table is still measured exactly
    monkeypatch.setattr(dmodel, "find_device_model", lambda target, profiles=None: tmp_path / "stored.json")
    assert calibrate.price_with_device_model(model, example, "cpu-ort", configurations=50) == tmp_path / "p.json"
    assert calibrate.price_with_device_model(model, example, "cpu-ort", configurations=5) is None
    assert built == ["cpu-ort"] * 2


def test_a_profile_of_the_same_model_at_another_size_is_replaced_not_fatal(tmp_path, capsys):
    """A profile found by the model's name but measured at another input size used to stop compress with
    "the profile has no table for layer ... 16x16"; now the model is priced afresh at its size."""
    from edgeprune.cli import main

    d = tmp_path / "profiles"
    common = ["--model", "tests.tiny:tiny_net", "--target", "cpu-ort", "--profiles", str(d), "-q"]
    assert main(["profile", *common, "--input-shape", "1,3,32,32", "--quick"]) == 0
    assert main(["compress", *common, "--data", "none", "--input-shape", "1,3,16,16", "--criterion", "l1",
                 "--budget", "macs=0.6x", "--epochs", "0", "--quick", "--out", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "model.onnx").exists()


def test_one_model_at_two_sizes_keeps_two_profiles_and_remeasures_nothing(tmp_path, capsys, monkeypatch):
    """Profiling the same model at 32 and 16 px leaves two files (keyed by size, neither replaces the other);
    a later compress or plan at either size reads its own file and measures nothing."""
    import json

    from edgeprune.cli import main
    from edgeprune.profile import profiler

    d = tmp_path / "profiles"
    common = ["--model", "tests.tiny:tiny_net", "--target", "cpu-ort", "--profiles", str(d), "-q"]
    for size in (32, 16):
        assert main(["profile", *common, "--input-shape", f"1,3,{size},{size}", "--quick", "--calibration", "1",
                     "--grid", "aligned"]) == 0
    files = {p.name: p.stat().st_mtime_ns for p in d.iterdir()}
    assert set(files) == {"cpu-ort--tests.tiny_tiny_net--32x32.json", "cpu-ort--tests.tiny_tiny_net--16x16.json"}

    def no_measuring(*a, **k):
        raise AssertionError("a profile was measured again")

    import edgeprune.profile as prof

    monkeypatch.setattr(profiler, "profile", no_measuring)
    monkeypatch.setattr(prof, "profile", no_measuring)
    monkeypatch.setattr(profiler, "_calibrate", no_measuring)
    monkeypatch.setattr(profiler, "_measure_layers", no_measuring)
    for size in (16, 32):
        capsys.readouterr()
        assert main(["plan", *common, "--input-shape", f"1,3,{size},{size}", "--criterion", "l1", "--budget",
                     "latency=0.8x", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["targets"]["cpu-ort"]["dense"] > 0
        assert main(["compress", *common, "--data", "none", "--input-shape", f"1,3,{size},{size}", "--criterion", "l1",
                     "--budget", "macs=0.6x", "--epochs", "0", "--quick", "--out", str(tmp_path / f"run{size}")]) == 0
        plan = json.loads((tmp_path / f"run{size}" / "plan.json").read_text())
        assert plan["profile"].endswith(f"--{size}x{size}.json")
    assert {p.name: p.stat().st_mtime_ns for p in d.iterdir()} == files  # nothing re-measured or rewritten


def test_a_legacy_profile_is_used_only_when_it_prices_the_model(tmp_path, capsys):
    """A size-less profile (written before sizes were in the name) is read at the size it was measured at, and
    left alone at another size (the model is measured under its sized name)."""
    from edgeprune.cli import main

    d = tmp_path / "profiles"
    common = ["--model", "tests.tiny:tiny_net", "--target", "cpu-ort", "--profiles", str(d), "-q"]
    assert main(["profile", *common, "--input-shape", "1,3,16,16", "--quick", "--calibration", "1", "--grid", "aligned"]) == 0
    legacy = d / "cpu-ort--tests.tiny_tiny_net.json"
    (d / "cpu-ort--tests.tiny_tiny_net--16x16.json").rename(legacy)
    before = legacy.stat().st_mtime_ns
    plan_args = ["plan", *common, "--criterion", "l1", "--budget", "latency=0.8x"]
    assert main([*plan_args, "--input-shape", "1,3,16,16"]) == 0
    assert [p.name for p in d.iterdir()] == [legacy.name]  # it prices the model at 16 px: read as is
    assert main([*plan_args, "--input-shape", "1,3,32,32"]) == 0
    assert sorted(p.name for p in d.iterdir()) == sorted([legacy.name, "cpu-ort--tests.tiny_tiny_net--32x32.json"])
    assert legacy.stat().st_mtime_ns == before


def test_a_profile_from_another_cpu_is_measured_again_not_refitted(tmp_path, monkeypatch):
    """Another CPU's tables re-fitted here priced ResNet-56 29% off (relative to dense); local_profile (compress,
    the demo) now measures the model here instead: a fresh table (resume=False), never recalibrate=True."""
    import json

    from edgeprune.cli import main
    from edgeprune.profile import profiler
    from tests.tiny import tiny_net

    d = tmp_path / "profiles"
    assert main(["profile", "--model", "tests.tiny:tiny_net", "--target", "cpu-ort", "--profiles", str(d), "-q",
                 "--input-shape", "1,3,16,16", "--quick", "--calibration", "1", "--grid", "aligned"]) == 0
    f = d / "cpu-ort--tests.tiny_tiny_net--16x16.json"
    doc = json.loads(f.read_text())
    doc["fingerprint"]["cpu"] = "Some Other CPU"
    f.write_text(json.dumps(doc))
    calls = []
    monkeypatch.setattr(profiler, "profile", lambda *a, **k: calls.append(k) or SimpleNamespace(path=f))
    got = profiler.local_profile(tiny_net(), "cpu-ort", "tests.tiny_tiny_net", profiles=d, example=torch.zeros(1, 3, 16, 16))
    assert got == f and len(calls) == 1
    assert calls[0]["resume"] is False and not calls[0].get("recalibrate")


def test_a_profile_re_fitted_from_another_cpus_tables_is_measured_again(tmp_path, monkeypatch):
    """A profile an older edgeprune re-fitted here keeps its tables' origin (tables_fingerprint): local_profile
    treats it as foreign and prices the model here, though its own fingerprint is this machine's."""
    import json

    from edgeprune.cli import main
    from edgeprune.profile import profiler
    from tests.tiny import tiny_net

    d = tmp_path / "profiles"
    assert main(["profile", "--model", "tests.tiny:tiny_net", "--target", "cpu-ort", "--profiles", str(d), "-q",
                 "--input-shape", "1,3,16,16", "--quick", "--calibration", "1", "--grid", "aligned"]) == 0
    f = d / "cpu-ort--tests.tiny_tiny_net--16x16.json"
    doc = json.loads(f.read_text())
    calls = []
    monkeypatch.setattr(profiler, "profile", lambda *a, **k: calls.append(k) or SimpleNamespace(path=f))
    args = (tiny_net(), "cpu-ort", "tests.tiny_tiny_net")
    assert profiler.local_profile(*args, profiles=d, example=torch.zeros(1, 3, 16, 16)) == f and not calls  # its own
    doc["tables_fingerprint"] = dict(doc["fingerprint"], cpu="Some Other CPU")
    f.write_text(json.dumps(doc))
    assert profiler.local_profile(*args, profiles=d, example=torch.zeros(1, 3, 16, 16)) == f
    assert len(calls) == 1 and calls[0]["resume"] is False


def test_plan_warns_about_a_profile_re_fitted_from_another_cpu(tmp_path, capsys):
    import json

    from edgeprune.cli import main

    d = tmp_path / "profiles"
    common = ["--model", "tests.tiny:tiny_net", "--target", "cpu-ort", "--profiles", str(d), "--input-shape", "1,3,16,16"]
    assert main(["profile", *common, "-q", "--quick", "--calibration", "1", "--grid", "aligned"]) == 0
    f = d / "cpu-ort--tests.tiny_tiny_net--16x16.json"
    doc = json.loads(f.read_text())
    doc["tables_fingerprint"] = dict(doc["fingerprint"], cpu="Some Other CPU")
    f.write_text(json.dumps(doc))
    capsys.readouterr()
    assert main(["plan", *common, "--criterion", "l1", "--budget", "latency=0.9x"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "layer tables from another device: cpu: Some Other CPU ->" in err and "--fresh" in err
