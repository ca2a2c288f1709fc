"""Apache TVM backend: build, cross-compile, and profile through a TVM RPC tracker with two local boards.

Everything except the first tests needs the extra (``pip install edgeprune[tvm]``)
and skips with a reason without it; ``make test-tvm`` runs this file.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time

import numpy as np
import pytest
import torch

from edgeprune.config import Target, get_target
from edgeprune.errors import BackendUnavailable

try:
    import tvm  # noqa: F401

    HAVE_TVM, WHY = True, ""
except Exception as _err:  # noqa: BLE001 - ImportError, or a broken install
    HAVE_TVM, WHY = False, f"apache-tvm not usable here ({type(_err).__name__}); pip install edgeprune[tvm]"

needs_tvm = pytest.mark.skipif(not HAVE_TVM, reason=WHY)
KEY = "edgeprune-test"


# --------------------------------------------------------------------------- no tvm needed


def test_availability_reason_when_tvm_does_not_import(monkeypatch):
    from edgeprune.backends import availability as backend_availability

    monkeypatch.setitem(sys.modules, "tvm", None)  # makes `import tvm` raise ImportError
    for name in ("cpu-tvm", "rpi4-tvm", "jetson-orin-tvm"):
        ok, why = backend_availability(get_target(name))
        assert not ok
        assert why == "unavailable: apache-tvm not installed (pip install edgeprune[tvm])"


def test_tvm_targets_list_fp32_only_and_fp16_is_refused(tmp_path):
    from edgeprune.backends import get_backend
    from edgeprune.config import load_target
    from edgeprune.errors import BadInput

    for name in ("cpu-tvm", "rpi4-tvm", "jetson-orin-tvm"):
        assert get_target(name).precisions == ("fp32",)
    ok, why = get_backend("tvm").precision_support("fp16")
    assert not ok and "fp32 graphs only" in why
    bad = tmp_path / "t.toml"
    bad.write_text('name = "x"\nbackend = "tvm"\nprecisions = ["fp32", "fp16"]\n')
    with pytest.raises(BadInput, match="does not measure or emit fp16"):
        load_target(bad)


def test_target_files_and_rpc_urls():
    from edgeprune.backends.tvm.rpc import RemoteSpec, parse_tracker

    cpu, rpi, jet = (get_target(n) for n in ("cpu-tvm", "rpi4-tvm", "jetson-orin-tvm"))
    assert cpu.backend == rpi.backend == jet.backend == "tvm"
    assert not cpu.is_remote and rpi.is_remote and jet.is_remote
    spec = RemoteSpec.parse(rpi.host)
    assert (spec.host, spec.port, spec.key) == ("127.0.0.1", 9190, "rpi4")
    assert rpi.options["tvm_target"]["mtriple"] == "aarch64-linux-gnu"
    assert jet.options["tvm_target"]["kind"] == "cuda"
    assert parse_tracker("10.0.0.2:9190") == ("10.0.0.2", 9190)
    with pytest.raises(Exception, match="HOST:PORT"):
        parse_tracker("nope")


def test_tracker_down_is_one_line():
    from edgeprune.backends.tvm.rpc import tracker_summary

    port = _free_port()
    with pytest.raises(BackendUnavailable, match="no TVM RPC tracker at 127.0.0.1") as err:
        tracker_summary("127.0.0.1", port, timeout=2)
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- helpers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(*args: str) -> subprocess.Popen:
    # own process group: killing it also kills the forked per-session worker
    return subprocess.Popen(
        [sys.executable, "-m", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


def _small_pruned_model() -> tuple[torch.nn.Module, torch.Tensor]:
    from edgeprune.graph import channel_groups
    from edgeprune.prune import prune
    from tests.tiny import tiny_net

    torch.manual_seed(0)
    model = tiny_net().eval()
    x = torch.randn(4, 3, 16, 16)
    graph = channel_groups(model, x[:1])
    keep = {g.id: list(range(0, g.size, 2)) for g in graph.prunable}  # half the channels of every group
    return prune(model, keep, graph=graph).eval(), x


def _remote_target(port: int, **options) -> Target:
    opts = {"tvm_target": {"kind": "llvm"}, "request_timeout_s": 60, "attempts": 3}
    opts.update(options)
    return Target(name="test-rpc-tvm", backend="tvm", host=f"rpc://127.0.0.1:{port}/{KEY}", threads=1, options=opts)


def _start_farm(n: int = 2) -> dict:
    """A tracker and ``n`` RPC servers on 127.0.0.1 under :data:`KEY`, all registered and free."""
    from edgeprune.backends.tvm.rpc import tracker_summary

    tport = _free_port()
    tracker = _spawn("tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(tport), "--port-end", str(tport + 1), "--silent")
    servers = {}
    for _ in range(n):
        p = _free_port()
        servers[p] = _spawn(
            "tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(p), "--port-end", str(p + 1),
            "--tracker", f"127.0.0.1:{tport}", "--key", KEY, "--silent",
        )
    info = {"port": tport, "servers": servers, "tracker": tracker}
    deadline = time.time() + 120
    while True:
        try:
            k = tracker_summary("127.0.0.1", tport, timeout=2)["keys"].get(KEY)
            if k and k["total"] == n and k["free"] == n:
                return info
        except BackendUnavailable:
            pass
        if time.time() > deadline:
            _stop_farm(info)
            pytest.fail(f"RPC tracker and {n} servers did not come up within 120 s")
        time.sleep(0.5)


def _stop_farm(info: dict) -> None:
    for proc in [*info["servers"].values(), info["tracker"]]:
        _kill(proc)


@pytest.fixture(scope="module")
def farm():
    """An RPC tracker and two RPC servers (boards) on 127.0.0.1 under one key."""
    info = _start_farm(2)
    try:
        yield info
    finally:
        _stop_farm(info)


# --------------------------------------------------------------------------- with tvm


@needs_tvm
def test_remote_profile_and_engine_through_tracker(farm, tmp_path, capsys):
    import edgeprune.compile as C
    from edgeprune.backends import get_backend
    from edgeprune.cli import main
    from edgeprune.graph.signature import LayerSignature
    from edgeprune.profile.timing import TimingProtocol

    model, x = _small_pruned_model()
    target = _remote_target(farm["port"])
    assert target.availability() == (True, "")

    # the boards command lists the key, two boards, both free
    assert main(["boards", "--tracker", f"127.0.0.1:{farm['port']}", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["keys"][KEY] == {"total": 2, "free": 2, "pending": 0}

    # engine: built here, run on a leased board, same outputs as PyTorch
    engine = C.compile(model, target, tmp_path / "engine", x[:1])
    assert engine.files["module"].exists() and json.loads(engine.files["manifest"].read_text())["backend"] == "tvm"
    out = engine.run(x)
    engine.runner.close()
    with torch.no_grad():
        ref = model(x).numpy()
    assert np.abs(out - ref).max() < 1e-4

    backend = get_backend("tvm")
    proto = TimingProtocol(warmup=2, min_runs=10, max_runs=30, round_size=10, rel_tol=0.2, max_seconds=5)
    whole = backend.time_module(engine.files["module"], target, [(1, 3, 16, 16)], proto)
    assert whole.count >= 10 and 0 < whole.p10 <= whole.median <= whole.p90 < 1000
    # per layer: one pruned layer configuration, built from its ONNX graph, timed on a board
    sig = LayerSignature("conv2d", 16, 16, (3, 3), (1, 1), (1, 1), 1, (16, 16), post="relu")
    layer = backend.time_layer(sig, target, proto)
    assert layer.count >= 10 and 0 < layer.median < 1000
    # the whole-model timing on the board agrees with the local one within noise (same machine here)
    local = backend.time_module(engine.files["module"], Target("local-tvm", "tvm", options=target.options), [(1, 3, 16, 16)], proto)
    assert 0.1 < whole.median / local.median < 10
    # both boards back at the tracker
    assert _free_boards(farm["port"]) == 2


def _free_boards(port: int, want: int = 2, wait: float = 20) -> int:
    from edgeprune.backends.tvm.rpc import tracker_summary

    deadline = time.time() + wait
    while True:
        k = tracker_summary("127.0.0.1", port)["keys"][KEY]
        if k["free"] >= want or time.time() > deadline:
            return k["free"]
        time.sleep(0.25)


@needs_tvm
def test_missing_key_and_busy_boards_fail_clearly(farm):
    from edgeprune.backends.tvm.rpc import RemoteSpec, free_board, request_board

    with pytest.raises(BackendUnavailable, match="no board with key 'rpi5'") as err:
        request_board(RemoteSpec("127.0.0.1", farm["port"], "rpi5"), timeout=5)
    assert "\n" not in str(err.value) and "edgeprune-test (2)" in str(err.value)

    spec = RemoteSpec("127.0.0.1", farm["port"], KEY)
    held = [request_board(spec, timeout=20)[0] for _ in range(2)]  # lease both boards
    try:
        t0 = time.time()
        with pytest.raises(BackendUnavailable, match="timed out after 2s waiting for a free board"):
            request_board(spec, timeout=2)
        assert time.time() - t0 < 15
    finally:
        for s in held:
            free_board(s)
        del held
    assert _free_boards(farm["port"]) == 2


def _farm_sigs(n: int) -> list:
    from edgeprune.graph.signature import LayerSignature

    return [LayerSignature("conv2d", c, 8, (3, 3), (1, 1), (1, 1), 1, (8, 8)) for c in range(4, 4 + n)]


@needs_tvm
def test_board_farm_profiles_in_parallel(farm):
    """Layer samples spread over both boards: each measured once, by either board; about half the time of one board.

    The timing is reported, and asserted only loosely: both boards run on this (shared, 2-core) machine.
    """
    from edgeprune.backends import get_backend
    from edgeprune.profile.farm import measure_all
    from edgeprune.profile.timing import TimingProtocol

    # a fixed ~0.8 s on the board per sample (never "stable": rel_tol < 0), so board time dominates the build here
    proto = TimingProtocol(warmup=2, min_runs=10, max_runs=10**6, round_size=20, rel_tol=-1.0, max_seconds=0.8)
    sigs = _farm_sigs(8)
    backend = get_backend("tvm")
    took, boards = {}, {}
    for n in (1, 2):
        got: dict[str, list[str]] = {}
        t0 = time.perf_counter()
        with backend.runner_pool(_remote_target(farm["port"], profile_boards=n), proto) as pool:
            assert len(pool.runners) == n
            measure_all(sigs, pool, lambda s, t, m, got=got: got.setdefault(s.key(), []).append(m["board"]))
        took[n] = time.perf_counter() - t0
        assert sorted(got) == sorted(s.key() for s in sigs) and all(len(v) == 1 for v in got.values())
        boards[n] = {v[0] for v in got.values()}
    assert len(boards[1]) == 1 and len(boards[2]) == 2
    ratio = took[2] / took[1]
    print(f"\n8 layer samples: 1 board {took[1]:.1f} s, 2 boards {took[2]:.1f} s ({ratio:.2f}x)")
    assert ratio < 0.95, f"two boards took {ratio:.2f}x the time of one"
    assert _free_boards(farm["port"]) == 2


@needs_tvm
def test_profile_on_a_farm_survives_a_board_dropping_out(tmp_path, monkeypatch):
    """profile() spreads its layer table over two boards; one is killed mid-run: nothing lost, nothing twice."""
    from edgeprune.backends.tvm.runtime import BoardRunner
    from edgeprune.profile import profile
    from edgeprune.profile.farm import RunnerLost
    from edgeprune.profile.timing import ModelProtocol, TimingProtocol

    info = _start_farm(2)
    try:
        real = BoardRunner.time
        done: dict[str, list[str]] = {}
        lost: list[str] = []

        def counted(self, sig):
            try:
                timing, meta = real(self, sig)
            except RunnerLost:
                lost.append(self.name)
                raise
            done.setdefault(sig.key(), []).append(meta["board"])
            return timing, meta

        monkeypatch.setattr(BoardRunner, "time", counted)
        victim = next(iter(info["servers"]))

        def kill_one(i: int) -> None:
            if i == 3:  # both boards are busy: the victim's in-flight sample goes back to the queue
                _kill(info["servers"][victim])

        torch.manual_seed(0)
        from tests.tiny import tiny_net

        model, x = tiny_net().eval(), torch.randn(1, 3, 16, 16)
        grid = {"conv2": [16, 32], "conv3": [16, 32], "conv4": [32, 64]}
        proto = TimingProtocol(warmup=2, min_runs=10, max_runs=10**6, round_size=20, rel_tol=-1.0, max_seconds=0.4)
        prof = profile(model, x, _remote_target(info["port"], request_timeout_s=20), model_name="tiny", grid=grid,
                       out=tmp_path / "farm.json", protocol=proto, calibration=2, model_protocol=ModelProtocol.quick(),
                       _on_record=kill_one)
        doc = json.loads((tmp_path / "farm.json").read_text())
        assert doc["complete"] and len(doc["records"]) == 16 and set(done) == set(doc["records"])
        assert all(len(v) == 1 for v in done.values()), "a sample was measured twice"
        assert lost and all(f":{victim} " in name for name in lost)
        by_board = [r["board"] for r in doc["records"].values()]
        assert len(set(by_board)) == 2 and by_board.count(f"127.0.0.1:{victim}") < 8  # the survivor took over
        assert prof.data["calibration"]["coef"]
    finally:
        _stop_farm(info)


@needs_tvm
def test_run_resumes_on_another_board_when_one_dies(farm, tmp_path, monkeypatch):
    """Kill the board a profiling run got; the run resumes on the other board with the same key."""
    import edgeprune.backends.tvm.rpc as rpc_mod
    from edgeprune.backends import get_backend
    from edgeprune.compile.onnx_export import export_onnx
    from edgeprune.profile.timing import TimingProtocol

    model, x = _small_pruned_model()
    onnx_path = export_onnx(model, x[:1], tmp_path / "small.onnx")
    real = rpc_mod.request_board
    used: list[int] = []

    def flaky(spec, **kw):
        sess, board = real(spec, **kw)
        used.append(board[1])
        if len(used) == 1:  # the first board dies right after the lease
            _kill(farm["servers"][board[1]])
        return sess, board

    monkeypatch.setattr(rpc_mod, "request_board", flaky)
    target = _remote_target(farm["port"])
    timing = get_backend("tvm").time_onnx(onnx_path, target, TimingProtocol.quick())
    assert timing.count >= 10 and timing.median > 0
    assert len(used) >= 2 and used[-1] != used[0]


@needs_tvm
def test_aarch64_cross_compilation_writes_an_artefact(tmp_path):
    import edgeprune.compile as C

    model, x = _small_pruned_model()
    engine = C.compile(model, get_target("rpi4-tvm"), tmp_path / "rpi4", x[:1])
    art = engine.files["module"]
    assert art.exists() and art.suffix in (".tar", ".so")
    assert engine.manifest["cross_compiled"] and engine.manifest["tvm_target"]["mtriple"] == "aarch64-linux-gnu"
    if art.suffix == ".tar":
        with tarfile.open(art) as tf:
            objs = [m for m in tf.getmembers() if m.name.endswith(".o")]
            assert objs
            head = tf.extractfile(objs[0]).read(20)
    else:
        head = art.read_bytes()[:20]
    assert head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == 183  # EM_AARCH64


@needs_tvm
def test_pruned_resnet20_engine_agrees_with_pytorch(tmp_path):
    import edgeprune.compile as C
    from edgeprune.data import load_data
    from edgeprune.graph import channel_groups
    from edgeprune.models import load_model
    from edgeprune.prune import prune

    data = load_data("cifar10-demo")
    model = load_model("resnet20-cifar10").eval()
    example = data.test.example(1)
    graph = channel_groups(model, example)
    mods = dict(model.named_modules())
    keep = {}
    for g in graph.prunable:  # keep the 75% strongest channels by the producers' L1 norm
        score = torch.zeros(g.size)
        for layer in g.producers():
            w = getattr(mods[layer], "weight", None)
            if w is not None and w.dim() >= 2 and w.shape[0] == g.size:
                score += w.detach().abs().flatten(1).sum(1)
        keep[g.id] = sorted(torch.argsort(score, descending=True)[: max(1, round(g.size * 0.75))].tolist())
    small = prune(model, keep, graph=graph).eval()
    engine = C.compile(small, get_target("cpu-tvm"), tmp_path / "r20", example)
    assert engine.manifest["bn_folded"]
    xs, ys = [], []
    for xb, _ in data.test.batches(250, limit=500):
        xs.append(engine.run(xb))
        with torch.no_grad():
            ys.append(small(xb).numpy())
    out, ref = np.concatenate(xs), np.concatenate(ys)
    assert len(out) == 500
    agree = float((out.argmax(1) == ref.argmax(1)).mean())
    assert agree >= 0.995, f"top-1 agreement {agree:.3f}"
    assert np.abs(out - ref).max() < 1e-3
