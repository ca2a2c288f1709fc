"""compress checks its criterion before any work, in a fresh process too (the criteria registry fills on discovery)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
from edgeprune.errors import BadInput
from edgeprune.pipeline.config import CompressConfig
from edgeprune.pipeline.context import Inputs, check_inputs
check_inputs(Inputs("resnet20-cifar10", None, "cpu-ort", "latency=0.6x"), CompressConfig(criterion="l1"))
try:
    check_inputs(Inputs("resnet20-cifar10", None, "cpu-ort", "latency=0.6x"), CompressConfig(criterion="fisher"))
except BadInput as err:
    assert "needs data" in str(err), err
else:
    raise AssertionError("fisher without data was accepted")
print("ok")
"""


def test_check_inputs_knows_criteria_in_a_fresh_process() -> None:
    """``--data none --criterion l1`` passes the early checks; a data criterion without data says it needs data."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("ok")
