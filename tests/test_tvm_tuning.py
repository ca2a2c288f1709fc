"""TVM tuning: the persistent MetaSchedule database (reuse across runs and models), the stated trial budget,
and the int8 claim (TVM 0.27 imports QDQ int8 as fp32 convolutions: not claimed). tvm tests skip without it."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

from edgeprune.config import get_target
from edgeprune.errors import BadInput

try:
    import tvm  # noqa: F401

    HAVE_TVM, WHY = True, ""
except Exception as _err:  # noqa: BLE001 - ImportError, or a broken install
    HAVE_TVM, WHY = False, f"apache-tvm not usable here ({type(_err).__name__}); pip install edgeprune[tvm]"

needs_tvm = pytest.mark.skipif(not HAVE_TVM, reason=WHY)
REPO = Path(__file__).resolve().parents[1]


class Tiny(nn.Module):
    """conv-relu-pool-linear on 8x8: few, cheap tuning tasks; ``head`` changes only the classifier."""

    def __init__(self, head: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


# --------------------------------------------------------------------------- no tvm needed


def test_budget_split_by_flops_sums_to_the_budget():
    from edgeprune.backends.tvm.tuning import allocate

    share = allocate([1000.0, 10.0, 1.0], 40, 8)
    assert sum(share) == 40 and min(share) >= 8 and share[0] == max(share)
    assert allocate([5.0, 5.0, 5.0, 5.0], 6, 8) == [2, 2, 1, 1]  # a short budget: fewer than the minimum each
    assert allocate([1.0, 2.0], 0, 8) == [0, 0]


def test_database_lives_under_the_user_cache_per_target(tmp_path, monkeypatch):
    from edgeprune.backends.tvm.tuning import database_dir

    monkeypatch.setenv("EDGEPRUNE_CACHE_DIR", str(tmp_path))
    a = database_dir("llvm -keys=cpu -mcpu=znver4 -num-cores=1")
    b = database_dir("llvm -keys=cpu -mcpu=znver4 -num-cores=2")
    assert a.parent == tmp_path / "tvm-tune" and a != b
    assert REPO not in a.parents


def test_an_empty_database_starts_from_the_shipped_one_for_the_same_target(tmp_path):
    from edgeprune.backends.tvm.tuning import database_dir, seed_from_shipped

    shipped = tmp_path / "shipped"
    src = database_dir("llvm -mcpu=znver4", shipped)
    src.mkdir(parents=True)
    (src / "database_tuning_record.json").write_text('["rec"]\n')
    (src / "database_workload.json").write_text('["wl"]\n')
    mine = database_dir("llvm -mcpu=znver4", tmp_path / "cache")
    assert seed_from_shipped(mine, "llvm -mcpu=znver4", shipped)
    assert (mine / "database_tuning_record.json").read_text() == '["rec"]\n'
    assert not seed_from_shipped(mine, "llvm -mcpu=znver4", shipped)  # never over a database that exists
    other = database_dir("llvm -mcpu=sapphirerapids", tmp_path / "cache")
    assert not seed_from_shipped(other, "llvm -mcpu=sapphirerapids", shipped) and not other.exists()


def test_compact_database_keeps_the_fastest_record_per_workload(tmp_path):
    import json

    from edgeprune.backends.tvm.tuning import compact_database

    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    recs = [[0, [["t0"], [0.003], {}, []]], [0, [["t1"], [0.001, 0.001], {}, []]], [1, [["t2"], [0.002], {}, []]],
            [1, [["t3"], [], {}, []]]]
    (src / "database_tuning_record.json").write_text("".join(json.dumps(r) + "\n" for r in recs) + '[1, [["cut')
    (src / "database_workload.json").write_text('["w0"]\n["w1"]\n')
    (src / "target.txt").write_text("llvm\n")
    assert compact_database(src, dst) == {"records_in": 4, "records_out": 2}
    kept = [json.loads(line)[1][0] for line in (dst / "database_tuning_record.json").read_text().splitlines()]
    assert kept == [["t1"], ["t2"]] and (dst / "target.txt").read_text() == "llvm\n"


def test_the_shipped_databases_are_package_data_named_by_their_target():
    from edgeprune.backends.tvm.tuning import SHIPPED, database_dir

    for folder in sorted(p for p in SHIPPED.glob("*") if p.is_dir()):
        tgt = (folder / "target.txt").read_text().strip()
        assert database_dir(tgt, SHIPPED) == folder, folder
        assert (folder / "database_tuning_record.json").stat().st_size > 0


def test_int8_is_refused_with_the_reason():
    from edgeprune.backends import get_backend
    from edgeprune.backends.tvm.runtime import INT8_NOTE

    backend = get_backend("tvm")
    ok, why = backend.precision_support("int8")
    assert not ok and INT8_NOTE in why and "no int8 kernels" in why
    with pytest.raises(BadInput, match="not offered for TVM targets"):
        backend.compile_options(None, True)
    for name in ("cpu-tvm", "rpi4-tvm"):
        assert "int8" not in get_target(name).precisions


def test_tune_trials_flag_refused_for_other_backends(tmp_path, capsys):
    from edgeprune.cli import main

    assert main(["compile", "--target", "cpu-ort", "--model", "resnet20-cifar10", "--tune-trials", "8",
                 "--out", str(tmp_path / "e"), "--verify-images", "0"]) == 2
    assert "--tune-trials applies to targets whose backend tunes (TVM)" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()


# --------------------------------------------------------------------------- tvm


@needs_tvm
def test_int8_qdq_onnx_imports_as_fp32_convolutions(tmp_path):
    """The claim in INT8_NOTE: if a future TVM imports QDQ convolutions as int8, this fails and int8 can be wired."""

    from edgeprune.backends.tvm.runtime import import_onnx
    from edgeprune.compile.onnx_export import export_onnx
    from edgeprune.quant.ort_int8 import quantize_onnx

    model, x = Tiny().eval(), torch.randn(1, 3, 8, 8)
    fp32 = export_onnx(model, x, tmp_path / "m.onnx")
    quantize_onnx(fp32, tmp_path / "q.onnx", get_target("cpu-ort"), calib=torch.randn(16, 3, 8, 8).numpy())
    mod, _ = import_onnx(tmp_path / "q.onnx")
    text = mod.script()
    assert "R.dequantize" in text  # the QDQ model was read as QDQ
    convs = [ln for ln in text.splitlines() if "R.nn.conv2d(" in ln]
    assert convs and all('dtype="float32") = R.nn.conv2d(' in ln for ln in convs), convs  # fp32 in, fp32 out


@needs_tvm
@pytest.mark.slow  # three tuned compiles: ~3 min on 2 shared cores (MetaSchedule starts build/run workers per task)
def test_second_compile_tunes_nothing_and_models_share_workloads(tmp_path, monkeypatch):
    from edgeprune.backends import get_backend
    from edgeprune.backends.tvm.tuning import database_dir
    from edgeprune.compile import compile as ep_compile

    monkeypatch.setenv("EDGEPRUNE_CACHE_DIR", str(tmp_path / "cache"))
    target = get_target("cpu-tvm")
    x = torch.randn(1, 3, 8, 8)
    logs: list[str] = []
    first = ep_compile(Tiny(), target, tmp_path / "a", x, tune_trials=8, log=logs.append)
    t1 = first.manifest["tuning"]
    assert t1["trials_budget"] == 8 and t1["tasks_tuned"] >= 1 and 0 < t1["trials_spent"] <= 8
    assert t1["tasks_from_database"] == 0
    db = Path(t1["database"])
    assert db.parent == tmp_path / "cache" / "tvm-tune" and (db / "database_tuning_record.json").stat().st_size > 0
    assert db == database_dir(__import__("tvm").target.Target(first.manifest["tvm_target"]))
    assert any("8 trials" in m for m in logs) and any("task 1/" in m for m in logs)  # budget and progress shown
    _, rows = get_backend("tvm").engine_report(first)
    assert ("tuning trial budget", 8) in rows

    second = ep_compile(Tiny(), target, tmp_path / "b", x, tune_trials=8)
    t2 = second.manifest["tuning"]
    assert t2["tasks_tuned"] == 0 and t2["trials_spent"] == 0
    assert t2["tasks_from_database"] == t1["tasks_tuned"]

    other = ep_compile(Tiny(head=6), target, tmp_path / "c", x, tune_trials=8)  # same conv, another classifier
    t3 = other.manifest["tuning"]
    assert t3["tasks_from_database"] >= 1 and t3["tasks_tuned"] >= 1
    with torch.no_grad():
        for eng, m in ((second, Tiny()), (other, Tiny(head=6))):
            assert float((torch.from_numpy(eng.runner(x.numpy())) - m.eval()(x)).abs().max()) < 1e-4
    assert not any(p.is_relative_to(REPO) for p in (db,)) and os.environ["EDGEPRUNE_CACHE_DIR"] in str(db)

    logs.clear()  # no trial budget: the schedules tuned above are applied, nothing is measured
    plain = ep_compile(Tiny(), target, tmp_path / "d", x, log=logs.append)
    t4 = plain.manifest["tuning"]
    assert t4["trials_budget"] == 0 and t4["trials_spent"] == 0 and t4["database"] == str(db)
    assert any("applying the schedules tuned before" in m for m in logs)
    with torch.no_grad():
        assert float((torch.from_numpy(plain.runner(x.numpy())) - Tiny().eval()(x)).abs().max()) < 1e-4
