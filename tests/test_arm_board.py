"""An emulated arm64 board behind a TVM RPC tracker: cross-compile, upload, run and verify there.

The board is ``tools/arm_board.sh``: an aarch64 TVM RPC server under QEMU user-mode emulation,
started from a cached arm64 userland (``tools/arm_board.sh setup`` builds it once; it needs the
package registries). Without qemu-aarch64, the cached userland or apache-tvm here, the board tests
skip with a one-line reason naming the missing piece. ``make test-arm`` sets the board up and runs
this file. The board's timings mean nothing (emulation); what is checked is that the aarch64
engine agrees with PyTorch and that everything measured there says "emulated".
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeprune.config import Target, get_target
from edgeprune.errors import BackendUnavailable

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "arm_board.sh"
KEY = "emulated-arm64"


def board_dir() -> Path:
    """The board folder: $EDGEPRUNE_ARM_BOARD_DIR, else the default user cache (conftest points
    $EDGEPRUNE_CACHE_DIR at a temporary folder, so the script's own default would miss the cache)."""
    env = os.environ.get("EDGEPRUNE_ARM_BOARD_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "edgeprune" / "arm64-board"


def _script(*args: str, board: Path | None = None, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "EDGEPRUNE_ARM_BOARD_DIR": str(board or board_dir())}
    return subprocess.run(["bash", str(SCRIPT), *args], check=False, env=env, capture_output=True, text=True, timeout=60, **kw)


def _why_no_board() -> str:
    try:
        import tvm  # noqa: F401
    except Exception as err:  # noqa: BLE001 - ImportError, or a broken install
        return f"apache-tvm not usable here ({type(err).__name__}); pip install edgeprune[tvm]"
    check = _script("check")
    if check.returncode != 0:
        return f"no emulated arm64 board: {check.stdout.strip() or check.stderr.strip()}"
    return ""


WHY = _why_no_board()
needs_board = pytest.mark.skipif(bool(WHY), reason=WHY)


# --------------------------------------------------------------------------- no board needed


def test_emulated_target_file():
    from edgeprune.backends.tvm.rpc import RemoteSpec

    t = get_target("arm64-emulated-tvm")
    assert t.backend == "tvm" and t.is_remote and t.precisions == ("fp32",)
    spec = RemoteSpec.parse(t.host)
    assert (spec.host, spec.key) == ("127.0.0.1", KEY)
    assert t.options["emulated"] is True and "EMULATED" in t.device
    assert t.options["tvm_target"]["mtriple"] == "aarch64-linux-gnu" and t.options["cross_compiler"] == "aarch64-linux-gnu-gcc"
    # the real boards are not emulated
    assert not get_target("rpi4-tvm").options.get("emulated", False)


def test_missing_board_is_one_line(tmp_path):
    """No userland in the folder: `check` fails with one line naming the missing piece (what CI sees)."""
    res = _script("check", board=tmp_path / "none")
    assert res.returncode == 1
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1
    assert "qemu-aarch64 not installed" in lines[0] or f"no arm64 board userland at {tmp_path / 'none'}" in lines[0]
    assert _script("dir", board=tmp_path / "b").stdout.strip() == str(tmp_path / "b")
    res = _script("server", "--tracker", "127.0.0.1:1", board=tmp_path / "none")
    assert res.returncode != 0 and "arm_board:" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    # the default folder is in the user cache, never the checkout
    env = {k: v for k, v in os.environ.items() if k not in ("EDGEPRUNE_ARM_BOARD_DIR", "EDGEPRUNE_CACHE_DIR")}
    env.pop("XDG_CACHE_HOME", None)
    env["HOME"] = str(tmp_path)
    out = subprocess.run(["bash", str(SCRIPT), "dir"], check=False, env=env, capture_output=True, text=True, timeout=30).stdout.strip()
    assert out == str(tmp_path / ".cache" / "edgeprune" / "arm64-board")


def test_profile_document_of_an_emulated_target_says_so():
    from edgeprune.backends import get_backend
    from edgeprune.profile.profiler import EMULATED_NOTE, _new_doc, is_emulated
    from edgeprune.profile.timing import ModelProtocol, TimingProtocol

    t = get_target("arm64-emulated-tvm")
    assert is_emulated(t) and not is_emulated(get_target("cpu-ort"))
    doc = _new_doc(t, get_backend("tvm"), "m", {}, TimingProtocol.quick(), ModelProtocol.quick())
    assert doc["emulated"] is True and doc["target"]["options"]["emulated"] is True
    assert "mean nothing" in EMULATED_NOTE


def test_profile_command_prints_emulated(monkeypatch, capsys):
    """Wherever a profile of the emulated board is printed, the table says its timings mean nothing."""
    import edgeprune.costmodel.command as cm
    import edgeprune.profile as P
    from edgeprune.backends import get_backend
    from edgeprune.cli import main
    from edgeprune.profile.lut import Profile
    from edgeprune.profile.profiler import _new_doc
    from edgeprune.profile.timing import ModelProtocol, TimingProtocol

    t = get_target("arm64-emulated-tvm")
    prof = Profile(_new_doc(t, get_backend("tvm"), "tiny", {}, TimingProtocol.quick(), ModelProtocol.quick()))
    monkeypatch.setattr(cm, "calibrated_profile", lambda *a, **k: None)
    monkeypatch.setattr(P, "profile", lambda *a, **k: prof)
    assert main(["profile", "--target", "arm64-emulated-tvm", "--model", "tests.tiny:tiny_net"]) == 0
    out = capsys.readouterr()
    assert "EMULATED: timings mean nothing" in out.out + out.err
    assert main(["profile", "--json", "--target", "arm64-emulated-tvm", "--model", "tests.tiny:tiny_net"]) == 0
    assert json.loads(capsys.readouterr().out)["emulated"] is True


# --------------------------------------------------------------------------- with the board


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # own session: the forked per-session workers go too
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def _board_count(port: int) -> int:
    from edgeprune.backends.tvm.rpc import tracker_summary

    try:
        k = tracker_summary("127.0.0.1", port, timeout=2)["keys"].get(KEY)
    except BackendUnavailable:
        return -1
    return k["free"] if k else 0


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """A TVM RPC tracker (this machine's tvm) and one emulated arm64 board registered with it."""
    tport, bport = _free_port(), _free_port()
    tracker = subprocess.Popen(
        [sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(tport), "--port-end", str(tport + 1), "--silent"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    log = open(tmp_path_factory.mktemp("arm-board") / "server.log", "w")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        ["bash", str(SCRIPT), "server", "--tracker", f"127.0.0.1:{tport}", "--key", KEY, "--port", str(bport)],
        env={**os.environ, "EDGEPRUNE_ARM_BOARD_DIR": str(board_dir())},
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    info = {"port": tport, "tracker": tracker, "server": server, "log": Path(log.name)}
    try:
        t0 = time.time()
        while _board_count(tport) < 1:
            if server.poll() is not None or time.time() - t0 > 240:
                pytest.fail(f"the emulated board did not register within {time.time() - t0:.0f} s: "
                            f"{info['log'].read_text()[-400:]}")
            time.sleep(1)
        info["startup_s"] = time.time() - t0
        print(f"\nemulated arm64 board registered after {info['startup_s']:.0f} s")
        yield info
    finally:
        _kill(server)
        _kill(tracker)
        log.close()


def _target(board: dict, **options) -> Target:
    t = get_target("arm64-emulated-tvm")
    return dataclasses.replace(t, host=f"rpc://127.0.0.1:{board['port']}/{KEY}", options={**t.options, **options})


@pytest.mark.slow
@needs_board
def test_compile_command_verifies_resnet20_on_the_emulated_board(board, tmp_path, capsys):
    """`edgeprune compile --target <emulated board>`: cross-compiled here, uploaded, run and verified there."""
    from edgeprune.cli import main

    toml = tmp_path / "arm64-emulated-tvm.toml"
    text = get_target("arm64-emulated-tvm").path.read_text()
    toml.write_text(text.replace("rpc://127.0.0.1:9190/", f"rpc://127.0.0.1:{board['port']}/"))
    t0 = time.perf_counter()
    rc = main(["compile", "--json", "--target", str(toml), "--model", "resnet20-cifar10", "--data", "cifar10-demo",
               "--verify-images", "20", "--out", str(tmp_path / "r20")])
    took = time.perf_counter() - t0
    out = capsys.readouterr().out
    assert rc == 0, out[-800:]
    res = json.loads(out)
    man = res["manifest"]
    assert man["emulated"] is True and man["cross_compiled"] and man["tvm_target"]["mtriple"] == "aarch64-linux-gnu"
    assert res["emulated"] is True
    so = Path(res["files"]["module"])
    head = so.read_bytes()[:20]
    assert so.suffix == ".so" and head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == 183  # EM_AARCH64
    v = res["verify"]
    assert v["images"] == 20 and v["passed"] and v["top1_agreement"] == 100.0 and v["max_abs_error"] < 1e-3
    with capsys.disabled():
        print(f"\ncompile + verify of ResNet-20 on the emulated board: {took:.0f} s "
              f"(build {man['build_s']:.0f} s here, 20 images there)")


@pytest.mark.slow
@needs_board
def test_engine_that_disagrees_with_pytorch_fails_verification(board, tmp_path):
    import edgeprune.compile as C
    from edgeprune.data import load_data
    from edgeprune.models import load_model
    from edgeprune.verify import verify

    data = load_data("cifar10-demo")
    model = load_model("resnet20-cifar10").eval()
    engine = C.compile(model, _target(board), tmp_path / "r20", data.test.example(1))
    try:
        good = verify(engine, model, data.test, limit=10)
        wrong = load_model("resnet20-cifar10").eval()
        with torch.no_grad():
            wrong.linear.weight.copy_(wrong.linear.weight.roll(1, dims=0))  # every class score moved to the next class
            wrong.linear.bias.copy_(wrong.linear.bias.roll(1, dims=0))
        bad = verify(engine, wrong, data.test, limit=10)
    finally:
        engine.runner.close()
    assert good.passed and good.top1_agreement == 100.0
    assert not bad.passed and bad.top1_agreement < 50 and bad.max_abs_error > 0.1


@pytest.mark.slow
@needs_board
def test_tiny_profile_on_the_emulated_board_is_labelled_emulated(board, tmp_path):
    from edgeprune.profile import profile
    from edgeprune.profile.profiler import EMULATED_NOTE
    from edgeprune.profile.timing import ModelProtocol, TimingProtocol
    from tests.tiny import tiny_net

    model, x = tiny_net().eval(), torch.randn(1, 3, 16, 16)
    proto = TimingProtocol(warmup=1, min_runs=5, max_runs=20, round_size=5, rel_tol=0.5, max_seconds=2)
    t0 = time.perf_counter()
    prof = profile(model, x, _target(board), model_name="tiny", grid={"conv4": [32, 64]}, out=tmp_path / "p.json",
                   protocol=proto, calibration=1, model_protocol=ModelProtocol.quick())
    took = time.perf_counter() - t0
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["complete"] and doc["emulated"] is True and prof.emulated
    assert doc["notes"][0] == EMULATED_NOTE and doc["target"]["name"] == "arm64-emulated-tvm"
    assert doc["records"] and all(r["board"].startswith("127.0.0.1:") for r in doc["records"].values())
    assert all(r["median"] > 0 for r in doc["records"].values())
    print(f"\ntiny profile on the emulated board: {len(doc['records'])} layer records in {took:.0f} s (timings mean nothing)")


@pytest.mark.slow
@needs_board
def test_board_dropping_mid_run_fails_in_one_line(board, tmp_path):
    """Kill the only board while an engine runs on it: a one-line error, no hang. Runs last (it ends the board)."""
    import edgeprune.compile as C
    from tests.tiny import tiny_net

    model, x = tiny_net().eval(), torch.randn(4, 3, 16, 16)
    engine = C.compile(model, _target(board, request_timeout_s=20, attempts=2), tmp_path / "tiny", x[:1])
    out = engine.run(x[:1])
    with torch.no_grad():
        assert np.abs(out - model(x[:1]).numpy()).max() < 1e-4
    _kill(board["server"])  # the board drops out between two calls of the same run
    t0 = time.perf_counter()
    with pytest.raises(BackendUnavailable) as err:
        engine.run(x)
    engine.runner.close()
    assert "\n" not in str(err.value) and time.perf_counter() - t0 < 120
    assert "board" in str(err.value)
