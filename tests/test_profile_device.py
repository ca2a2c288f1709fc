"""Profiles know their device (issue 23, item 5) and resume where the user is (item 7, profile half)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from edgeprune.config import get_target
from edgeprune.environment import device_fingerprint
from edgeprune.errors import BadInput
from edgeprune.profile import (
    ForeignProfile,
    ModelProtocol,
    TimingProtocol,
    load_profile,
    profile,
    resume_profile,
    stored_example,
)
from edgeprune.profile.device import ALLOW_FOREIGN_ENV, device_mismatch, same_isa_family, stored_fingerprint
from tests.tiny import TinyNet

QUICK = {"protocol": TimingProtocol.quick(), "model_protocol": ModelProtocol.quick()}
EXAMPLE = torch.zeros(1, 3, 8, 8)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    path = tmp_path_factory.mktemp("dev") / "cpu-ort--tiny.json"
    return profile(TinyNet(width=16).eval(), EXAMPLE, "cpu-ort", model_name="tiny", out=path, resume=False,
                   grid="aligned", calibration=1, **QUICK)


def _foreign(src: Path, dst: Path, **changes) -> Path:
    doc = json.loads(src.read_text())
    doc["fingerprint"].update(changes)
    doc["cpu"] = doc["fingerprint"]["cpu"]
    dst.write_text(json.dumps(doc))
    return dst


def test_fingerprint_and_example_shape_are_recorded(measured):
    doc = measured.data
    assert doc["fingerprint"] == device_fingerprint(get_target("cpu-ort"))
    assert doc["example"]["shape"] == [1, 3, 8, 8]
    assert load_profile(measured.path, target="cpu-ort").foreign == []


def test_foreign_profile_is_refused_in_one_line(measured, tmp_path, monkeypatch):
    monkeypatch.delenv(ALLOW_FOREIGN_ENV, raising=False)
    path = _foreign(measured.path, tmp_path / "f.json", cpu="Some Other CPU", threads=4)
    with pytest.raises(ForeignProfile) as err:
        load_profile(path, target="cpu-ort")
    msg = str(err.value)
    assert "\n" not in msg and "cpu: Some Other CPU -> " in msg and "threads: 4 -> 1" in msg
    assert "--fresh" in msg and "--recalibrate" in msg and "--allow-foreign-profile" in msg
    assert isinstance(err.value, BadInput)
    # explicit escapes: the argument, or the environment; the differences stay visible
    assert load_profile(path, target="cpu-ort", allow_foreign=True).foreign
    monkeypatch.setenv(ALLOW_FOREIGN_ENV, "1")
    assert load_profile(path, target="cpu-ort").foreign
    # without a target (a file inspected, not planned on) nothing is compared
    monkeypatch.delenv(ALLOW_FOREIGN_ENV)
    assert load_profile(path).foreign == []


def test_old_profile_without_fingerprint_is_compared_on_its_cpu(measured, tmp_path, monkeypatch):
    monkeypatch.delenv(ALLOW_FOREIGN_ENV, raising=False)
    doc = json.loads(measured.path.read_text())
    del doc["fingerprint"]
    (tmp_path / "same.json").write_text(json.dumps(doc))
    assert load_profile(tmp_path / "same.json", target="cpu-ort").foreign == []
    doc["cpu"] = "Intel(R) Xeon(R) Processor" if "AMD" in doc["cpu"] else "AMD EPYC"
    (tmp_path / "old.json").write_text(json.dumps(doc))
    with pytest.raises(ForeignProfile, match="cpu: "):
        load_profile(tmp_path / "old.json", target="cpu-ort")
    assert stored_fingerprint(doc)["runtime"] == {"onnxruntime": doc["software"]["onnxruntime"]}
    here = device_fingerprint(get_target("cpu-ort"))
    assert same_isa_family(doc, here) == here["isa_family"].startswith("x86")


def test_simulated_and_remote_targets_ignore_this_host_cpu():
    here = {"target": "vta-pynq", "backend": "vta", "host": "local", "cpu": "A", "isa": ["avx2"], "threads": 1, "runtime": {}}
    doc = {"unit": "cycles", "fingerprint": dict(here, cpu="B", isa=[])}
    assert device_mismatch(doc, here) == []
    doc = {"unit": "ms", "fingerprint": dict(here, cpu="B", host="rpc://h:9190/rpi4")}
    assert [d.split(":")[0] for d in device_mismatch(doc, dict(here, host="rpc://h:9190/rpi4"))] == []


def test_recalibrate_keeps_same_family_tables_and_adopts_this_device(measured, tmp_path):
    here = device_fingerprint(get_target("cpu-ort"))
    path = _foreign(measured.path, tmp_path / "f.json", cpu="Another CPU of this family")
    seen = []
    prof = profile(TinyNet(width=16).eval(), None, "cpu-ort", model_name="tiny", out=path, grid="aligned", calibration=1,
                   recalibrate=True, _on_record=seen.append, **QUICK)
    assert seen == [] and set(prof.records) == set(measured.records)  # tables kept, nothing re-measured
    assert prof.data["fingerprint"] == here and prof.data["tables_fingerprint"]["cpu"] == "Another CPU of this family"
    assert any("same ISA family" in n for n in prof.data["notes"])
    assert load_profile(path, target="cpu-ort").foreign == []
    # another ISA family: the tables do not carry over
    other = _foreign(measured.path, tmp_path / "g.json", cpu="Other", isa_family="arm-neon", isa=["asimd"])
    with pytest.raises(ForeignProfile, match="another ISA family.*--fresh"):
        profile(TinyNet(width=16).eval(), None, "cpu-ort", model_name="tiny", out=other, grid="aligned",
                recalibrate=True, **QUICK)
    # nor is a foreign file continued by a plain resume
    with pytest.raises(ForeignProfile, match="mix two machines"):
        profile(TinyNet(width=16).eval(), None, "cpu-ort", model_name="tiny", out=_foreign(measured.path, tmp_path / "h.json", cpu="X"), grid="aligned", **QUICK)


def _interrupted(path: Path, k: int = 2) -> None:
    class Boom(RuntimeError):
        pass

    def hook(i):
        if i == k:
            raise Boom()

    with pytest.raises(Boom):
        profile(TinyNet(width=16).eval(), EXAMPLE, "cpu-ort", model_name="tiny", out=path, resume=False, grid="aligned",
                calibration=1, _on_record=hook, **QUICK)
    doc = json.loads(path.read_text())
    assert doc["complete"] is False and len(doc["records"]) == k and doc["example"]["shape"] == [1, 3, 8, 8]


def test_resume_reads_the_stored_shape(measured, tmp_path):
    path = tmp_path / "cpu-ort--tiny.json"
    _interrupted(path)
    assert tuple(stored_example(path).shape) == (1, 3, 8, 8)
    # a user model (no registered input size) and no example: the interrupted file's shape is used
    prof = profile(TinyNet(width=16).eval(), None, "cpu-ort", model_name="tiny", out=path, grid="aligned",
                   calibration=1, **QUICK)
    assert prof.complete and set(prof.records) == set(measured.records)


def test_resume_profile_finishes_what_compress_interrupted(measured, tmp_path):
    path = tmp_path / "cpu-ort--tiny.json"
    _interrupted(path)
    with pytest.raises(BadInput, match="incomplete"):
        load_profile(path, target="cpu-ort")
    prof = resume_profile(path, TinyNet(width=16).eval(), "cpu-ort", grid="aligned", calibration=1)
    assert prof.complete and prof.model_name == "tiny" and set(prof.records) == set(measured.records)
    assert prof.data["protocol"]["layer"] == measured.data["protocol"]["layer"]  # the stored (quick) protocol kept
    assert load_profile(path, target="cpu-ort").complete


def test_cli_profile_resume_needs_no_input_shape(tmp_path):
    out = tmp_path / "p.json"
    args = [sys.executable, "-m", "edgeprune", "profile", "--target", "cpu-ort", "--model", "tests.tiny:tiny_net",
            "--quick", "--calibration", "1", "--grid", "aligned", "-q", "--out", str(out)]
    doc_shape = ["--input-shape", "1,3,8,8"]
    # an interrupted file: what a killed run leaves (records missing, complete false, the shape stored)
    subprocess.run(args + doc_shape, cwd=ROOT, check=True, capture_output=True, timeout=300)
    doc = json.loads(out.read_text())
    doc["records"] = dict(list(doc["records"].items())[:2])
    doc.update(complete=False, calibration=None, dense_latency=None)
    out.write_text(json.dumps(doc))
    done = subprocess.run(args + ["--resume"], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert load_profile(out, target="cpu-ort").complete
