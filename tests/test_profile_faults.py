"""Fault test: a profiling run killed at random points ten times still finishes, with --resume, to the
same table an uninterrupted run gives; after every kill the file on disk is absent or valid JSON."""
from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from edgeprune.profile import load_profile

ARGS = ["--target", "cpu-ort", "--model", "tests.tiny:tiny_net", "--input-shape", "1,3,16,16",
        "--quick", "--calibration", "2", "-q"]
ROOT = Path(__file__).resolve().parents[1]


def _cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "edgeprune", "profile", *ARGS, "--out", str(out), *extra]


def test_profile_resumes_after_ten_kills(tmp_path) -> None:
    ref = tmp_path / "ref.json"
    subprocess.run(_cmd(ref), cwd=ROOT, check=True, capture_output=True, timeout=300)
    out = tmp_path / "killed.json"
    rng = random.Random(0)
    for _ in range(10):
        proc = subprocess.Popen(_cmd(out, "--resume"), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.0, 4.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        if out.exists():
            json.loads(out.read_text())  # atomic writes: never a half-written file
    done = subprocess.run(_cmd(out, "--resume"), cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    a, b = load_profile(ref), load_profile(out)
    keys_ref = set(json.loads(ref.read_text())["records"])
    keys_out = set(json.loads(out.read_text())["records"])
    assert keys_out == keys_ref and a.dense_latency is not None and b.dense_latency is not None
