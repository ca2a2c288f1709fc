"""Fault test: ``edgeprune compress`` killed (SIGKILL) at 10 random points, each followed by ``--resume``, ends
with the same plan and a byte-identical engine as an uninterrupted run.

The budget (MACs and bytes: a pruned, partly int8 plan) does not depend on measured latency, so measurement
noise cannot change the plan; both engines (fp32 ONNX and int8 QDQ) are compared byte for byte. The run
is small (ResNet-20, embedded demo data, 0.1 epoch, 200 eval images, quick timing).
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--model", "resnet20-cifar10", "--data", "cifar10-demo", "--target", "cpu-ort", "--budget", "macs=0.7x,bytes=0.4x",
        "--epochs", "0.1", "--criterion", "l1", "--eval-limit", "200", "--quick", "-q"]
ENGINES = ("model.onnx", "model.int8.onnx")


def _cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "edgeprune", "compress", *ARGS, "--out", str(out), *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _plan(out: Path) -> tuple:
    doc = json.loads((out / "plan.json").read_text())
    return doc["keep"], doc.get("precisions")


@pytest.mark.slow
def test_compress_resumes_after_ten_kills(tmp_path) -> None:
    ref = tmp_path / "ref"
    t0 = time.perf_counter()
    subprocess.run(_cmd(ref), cwd=ROOT, env=_env(), check=True, capture_output=True, timeout=600)
    length = time.perf_counter() - t0
    out = tmp_path / "killed"
    rng = random.Random(0)
    for _ in range(10):
        proc = subprocess.Popen(_cmd(out, "--resume"), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(rng.uniform(0.5, length))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the run and anything it started
        proc.wait(timeout=60)
    done = subprocess.run(_cmd(out, "--resume"), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert _plan(out) == _plan(ref)
    shipped = [n for n in ENGINES if (ref / n).exists()]
    assert shipped == list(ENGINES) == [n for n in ENGINES if (out / n).exists()]
    for name in shipped:
        assert (out / name).read_bytes() == (ref / name).read_bytes(), f"{name} differs after resuming"
