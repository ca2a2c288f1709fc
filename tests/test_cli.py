"""The command line: help everywhere, JSON output, one-line errors with exit code 2."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edgeprune.cli import build_parser


def commands() -> list[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sorted(sub.choices)


def run_cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeprune", *args], capture_output=True, text=True, timeout=timeout, check=False)


def test_core_commands_exist() -> None:
    assert {"targets", "compress", "demo"} <= set(commands())


@pytest.mark.parametrize("cmd", commands())
def test_help(cmd: str) -> None:
    r = run_cli(cmd, "--help")
    assert r.returncode == 0 and "example" in r.stdout.lower() and "exit codes" in r.stdout


def test_targets_json() -> None:
    r = run_cli("targets", "--json")
    assert r.returncode == 0
    rows = json.loads(r.stdout)
    assert any(row["name"] == "cpu-ort" and row["available"] for row in rows)


def _one_line_error(r: subprocess.CompletedProcess, code: int = 2) -> str:
    assert r.returncode == code, (r.returncode, r.stderr)
    err = r.stderr.strip()
    assert "Traceback" not in err, err
    last = err.splitlines()[-1]
    assert last.startswith("edgeprune:"), err  # logs may precede it; the error is the one last line
    return last


def test_bad_inputs(tmp_path) -> None:
    assert "model not found" in _one_line_error(run_cli("compress", "--model", str(tmp_path / "missing.pt")))
    assert "unknown target" in _one_line_error(run_cli("compress", "--target", "no-such-board"))
    assert "cannot parse budget" in _one_line_error(run_cli("compress", "--budget", "latency=fast"))
    bad = tmp_path / "bad.toml"
    bad.write_text("name = 'x'\nbackend = [")
    assert "malformed target file" in _one_line_error(run_cli("compress", "--target", str(bad)))
    assert "error" in _one_line_error(run_cli("compress", "--epochs", "many"))
    assert "dataset not found" in _one_line_error(run_cli("compress", "--data", str(tmp_path / "none.npz")))


def test_fpga_build_of_the_demo_model(tmp_path) -> None:
    """CI's "FPGA build": the demo model compiled for the simulated VTA on a Pynq, bit-exact, with a report."""
    out = tmp_path / "fpga"
    r = run_cli("compile", "--target", "vta-pynq", "--model", "resnet20-cifar10", "--out", str(out),
                "--verify-images", "20", "--json", timeout=600)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["vta"]["verification"]["bit_exact"] and res["vta"]["fits"] and res["vta"]["cycles"] > 0
    for name in ("program.bin", "program.lst", "weights.bin", "report.json"):
        assert (out / "vta" / name).stat().st_size > 0
    assert "not an RTL simulation" in (out / "vta" / "report.json").read_text()
