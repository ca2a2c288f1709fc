"""Apache TVM backend (``cpu-tvm``, ``rpi4-tvm``, ``jetson-orin-tvm``): build with Relax, time with ``time_evaluator``.

Local targets run on this machine; remote ones (``host = "rpc://HOST:PORT/KEY"``)
lease a board from a TVM RPC tracker, upload the module, time it there and
free the board (:mod:`edgeprune.backends.tvm.rpc`); a board lost mid-run is replaced by
another with the same key. tvm is imported inside functions only: this module
imports (and lists the targets as unavailable) without it.

Target options (``[options]`` of the target file):

- ``tvm_target``: TVM target as a dict (``{kind = "llvm", mcpu = "native"}``);
  ``mcpu = "native"`` means this machine's CPU (local targets only).
- ``tune_trials``: MetaSchedule trial budget for ``edgeprune compile`` (0 = no tuning).
- ``tune_trials_per_task``, ``tune_min_trials_per_task``, ``tune_minutes``, ``tune_workers``: how the
  budget is spread (by FLOPs, heaviest task first), capped in time and built; schedules persist in the
  target's tuning database under the user cache (:mod:`edgeprune.backends.tvm.tuning`).
- ``cross_compiler``: e.g. ``aarch64-linux-gnu-gcc``; used to link a ``.so`` when
  installed, else the module is exported as a ``.tar`` the board links itself.
- ``request_timeout_s``, ``session_timeout_s``, ``attempts``: RPC lease behaviour.
- ``profile_boards``: how many boards a profile leases at once (0: every free one
  with the key; :meth:`TvmBackend.runner_pool`).
- ``emulated``: the board is emulated (QEMU user-mode, ``tools/arm_board.sh``): engines and
  profiles are labelled "emulated"; their timings mean nothing, their outputs are checked.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeprune.backends.base import Backend, Engine
from edgeprune.backends.tvm.options import TvmOptions
from edgeprune.errors import BackendUnavailable, BadInput
from edgeprune.profile.farm import RunnerPool

if TYPE_CHECKING:
    from torch import nn

    from edgeprune.config import Target
    from edgeprune.graph.signature import LayerSignature
    from edgeprune.profile.timing import Timing, TimingProtocol

INSTALL_HINT = "pip install edgeprune[tvm]"
# checked by tests/test_tvm_tuning.py::test_int8_qdq_onnx_imports_as_fp32_convolutions
INT8_NOTE = ("TVM 0.27 (Relax) imports a QDQ int8 ONNX model as dequantise -> fp32 convolution -> quantise "
             "(no int8 kernels, no speed-up), so int8 is not claimed")


def tvm_import_error(light: bool = False) -> str | None:
    """None when ``import tvm`` works, else why it does not (one line). ``light``: only whether the package is
    installed (listing targets must not import tvm, which pulls torch in: 2 s); a broken install then shows up
    when the target is used."""
    if light:
        import importlib.util

        return None if importlib.util.find_spec("tvm") is not None else f"unavailable: apache-tvm not installed ({INSTALL_HINT})"
    try:
        import tvm  # noqa: F401
    except ImportError as err:
        if getattr(err, "name", None) in ("tvm", "tvm_ffi") or "No module named 'tvm" in str(err) or "import of tvm" in str(err):
            return f"unavailable: apache-tvm not installed ({INSTALL_HINT})"
        return f"unavailable: apache-tvm does not import ({str(err).splitlines()[0][:120]}; {INSTALL_HINT})"
    except Exception as err:  # noqa: BLE001 - a broken install (e.g. a mismatched apache-tvm-ffi) fails with other errors
        return f"unavailable: apache-tvm does not import ({type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else ''})"
    return None


# --------------------------------------------------------------------------- targets


def target_dict(target: Target, resolve_native: bool = True) -> dict[str, Any]:
    """The TVM target of ``target`` as a dict (``options.tvm_target``; default: llvm for this CPU). ``mcpu =
    "native"`` becomes this CPU's name (which imports tvm) unless ``resolve_native`` is False."""
    raw = target.options.get("tvm_target", {"kind": "llvm", "mcpu": "native"})
    if isinstance(raw, str):
        try:
            raw = json.loads(raw) if raw.strip().startswith("{") else {"kind": raw}
        except json.JSONDecodeError as err:
            raise BadInput(f"target {target.name}: options.tvm_target is not valid JSON: {err.msg}") from None
    if not isinstance(raw, dict) or "kind" not in raw:
        raise BadInput(f"target {target.name}: options.tvm_target must be a table with a 'kind' (e.g. {{kind = \"llvm\"}})")
    d = json.loads(json.dumps(raw))  # deep copy
    host = d.get("host")
    for t in (d, host if isinstance(host, dict) else None):
        if t is None or t.get("kind") != "llvm":
            continue
        if t.get("mcpu") == "native" and resolve_native:
            if target.is_remote:
                raise BadInput(f"target {target.name}: mcpu = 'native' only makes sense for a local target; name the board's CPU")
            from tvm.target import codegen

            t["mcpu"] = codegen.llvm_get_system_cpu()
        t.setdefault("num-cores", target.threads)
    return d


def is_cross(tdict: dict[str, Any]) -> bool:
    """True when the code is for another CPU architecture than this machine's."""
    import platform

    host = tdict.get("host") if tdict.get("kind") != "llvm" else tdict
    triple = str((host or {}).get("mtriple", ""))
    if not triple:
        return False
    machine = platform.machine().lower()
    arch = triple.split("-")[0].lower()
    return not (arch == machine or (arch in ("x86_64", "amd64") and machine in ("x86_64", "amd64")))


def device_kind(tdict: dict[str, Any]) -> str:
    """``cpu`` or ``cuda`` (what the engine runs on)."""
    return "cuda" if tdict.get("kind") == "cuda" else "cpu"


def cuda_build_error() -> str | None:
    """None when this TVM can generate CUDA code and nvcc is installed, else why not."""
    if shutil.which("nvcc") is None and not Path("/usr/local/cuda/bin/nvcc").exists():
        return "nvcc (CUDA toolkit) not found"  # checked first: tvm_ffi imports torch (2 s), listing targets must not
    import tvm_ffi

    if tvm_ffi.get_global_func("target.build.cuda", allow_missing=True) is None:
        return "this apache-tvm wheel was built without CUDA codegen"
    return None


# --------------------------------------------------------------------------- import, build, export


def import_onnx(onnx_path: str | Path) -> tuple[Any, list[tuple[str, tuple[int, ...]]]]:
    """Relax IRModule of an ONNX model (weights embedded) and its inputs (name, static shape)."""
    import onnx
    from tvm.relax.frontend.onnx import from_onnx

    model = onnx.load(str(onnx_path))
    inits = {i.name for i in model.graph.initializer}
    inputs = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dims = tuple(d.dim_value if d.dim_value > 0 else 1 for d in vi.type.tensor_type.shape.dim)
        inputs.append((vi.name, dims))
    shape = {n: list(s) for n, s in inputs}
    mod = from_onnx(model, shape_dict=shape, keep_params_in_input=False)
    return mod, inputs


def build_with_report(mod: Any, target: Target, tune_trials: int = 0, db_dir: Path | None = None,
                      log: Callable[[str], None] | None = None) -> tuple[Any, Any]:
    """Relax VM executable of ``mod`` for ``target`` and the tuning report (None when untuned).

    ``tune_trials > 0``: MetaSchedule with the persistent database of the target
    (:mod:`edgeprune.backends.tvm.tuning`; ``db_dir`` overrides its folder).
    """
    import tvm
    from tvm import relax

    tdict = target_dict(target)
    if device_kind(tdict) == "cuda":
        why = cuda_build_error()
        if why:
            raise BackendUnavailable(f"target {target.name} needs CUDA: {why}")
    tgt = tvm.target.Target(tdict)
    report = None
    if tune_trials > 0:
        if device_kind(tdict) == "cuda":
            raise BadInput(f"target {target.name}: MetaSchedule tuning is wired for CPU targets only; set tune_trials = 0")
        from edgeprune.backends.tvm.tuning import prepare, tune

        # weights re-laid out for the schedule at compile time (folded constants); not when cross-compiling,
        # where folding would run the target's code here
        prepack = bool(target.options.get("tune_weight_prepack", True)) and not is_cross(tdict)
        mod, report = tune(prepare(mod, tgt, prepack), tgt, target, tune_trials, db_dir, log, prepack)
        report.weight_prepack = prepack
    elif device_kind(tdict) == "cpu" and not is_cross(tdict) and target.options.get("use_tuned", True):
        from edgeprune.backends.tvm.tuning import apply_tuned, tuned_database

        folder = Path(db_dir) if db_dir is not None else tuned_database(tgt)
        if folder is not None and (folder / "database_tuning_record.json").is_file():
            if log:
                log(f"no tuning asked: applying the schedules tuned before for this target ({folder})")
            mod, report = apply_tuned(mod, tgt, folder, bool(target.options.get("tune_weight_prepack", True)))
    return relax.build(mod, target=tgt), report


def build(mod: Any, target: Target, tune_trials: int = 0, db_dir: Path | None = None, log: Callable[[str], None] | None = None) -> Any:
    """Relax VM executable of ``mod`` for ``target`` (optionally MetaSchedule-tuned; see :func:`build_with_report`)."""
    return build_with_report(mod, target, tune_trials, db_dir, log)[0]


def export(ex: Any, target: Target, out_dir: Path, stem: str = "model") -> Path:
    """Write the executable into ``out_dir`` (atomically): ``.so`` when it can be linked here, else ``.tar``."""
    from tvm.support import cc

    tdict = target_dict(target)
    fcompile, ext = None, ".so"
    if is_cross(tdict):
        cross = str(target.options.get("cross_compiler", ""))
        if cross and shutil.which(cross):
            fcompile = cc.cross_compiler(cross)
        else:
            ext = ".tar"  # object files; the board's RPC server links them with its own gcc
    elif shutil.which("gcc") is None and shutil.which("cc") is None and shutil.which("g++") is None:
        ext = ".tar"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / f"{stem}{ext}"
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{stem}.", dir=out_dir))
    try:
        tmp = tmp_dir / final.name
        with _quiet_stderr():
            if fcompile is not None:
                ex.export_library(str(tmp), fcompile=fcompile)
            else:
                ex.export_library(str(tmp))
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return final


class _quiet_stderr:
    """Silence TVM's C++ log lines on fd 2 (export_library prints one "Scope Saving" warning per function)."""

    def __enter__(self) -> None:
        try:
            self._saved = os.dup(2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
        except OSError:
            self._saved = None

    def __exit__(self, *exc: object) -> None:
        if self._saved is not None:
            os.dup2(self._saved, 2)
            os.close(self._saved)


# --------------------------------------------------------------------------- running and timing


def _device(tvm_or_sess: Any, kind: str) -> Any:
    return tvm_or_sess.cuda(0) if kind == "cuda" else tvm_or_sess.cpu(0)


def _first_output(out: Any) -> np.ndarray:
    while not hasattr(out, "numpy"):
        out = out[0]
    return out.numpy()


class LoadedModule:
    """A built module loaded on a device (this machine or a leased board) with a VM ready to call."""

    def __init__(self, lib_path: Path, kind: str, sess: Any = None) -> None:
        import tvm
        from tvm import relax

        self.sess = sess
        if sess is None:
            self.dev = _device(tvm, kind)
            mod = tvm.runtime.load_module(str(lib_path))
        else:
            sess.upload(str(lib_path))
            self.dev = _device(sess, kind)
            mod = sess.load_module(Path(lib_path).name)
        self.vm = relax.VirtualMachine(mod, self.dev)

    def tensor(self, x: np.ndarray) -> Any:
        import tvm

        return tvm.runtime.tensor(np.ascontiguousarray(x), self.dev)

    def run(self, *xs: np.ndarray) -> np.ndarray:
        """Run ``main`` once and return the first output."""
        return _first_output(self.vm["main"](*[self.tensor(x) for x in xs]))

    def time(self, xs: list[np.ndarray], protocol: TimingProtocol) -> Timing:
        """Time ``main`` with ``time_evaluator`` under ``protocol`` (rounds until the median is stable)."""
        args = [self.tensor(x) for x in xs]
        if protocol.warmup:
            self.vm.time_evaluator("main", self.dev, number=1, repeat=protocol.warmup)(*args)
        from edgeprune.profile.timing import Timing, collect

        def round_of(n: int) -> list[float]:
            res = self.vm.time_evaluator("main", self.dev, number=1, repeat=n, min_repeat_ms=0)(*args)
            return [float(r) * 1e3 for r in res.results]

        samples = collect(round_of, protocol)
        return Timing.from_samples(samples)


def random_inputs(shapes: list[tuple[int, ...]], seed: int = 0) -> list[np.ndarray]:
    """Random float32 inputs of the given shapes."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(np.float32) for s in shapes]


def on_target(target: Target, lib_path: Path, fn: Callable[[LoadedModule], Any], log: Callable[[str], None] | None = None) -> Any:
    """Load ``lib_path`` on the target (here, or on a leased board with retries) and return ``fn(module)``."""
    kind = device_kind(target_dict(target))
    if not target.is_remote:
        return fn(LoadedModule(lib_path, kind))
    from edgeprune.backends.tvm.rpc import RemoteSpec, run_on_board

    opts = target.options
    return run_on_board(
        RemoteSpec.parse(target.host),
        lambda sess, board: fn(LoadedModule(lib_path, kind, sess)),
        attempts=int(opts.get("attempts", 3)),
        timeout=float(opts.get("request_timeout_s", 60)),
        session_timeout=float(opts.get("session_timeout_s", 0)),
        log=log,
    )


class BoardRunner:
    """One leased board holding its own RPC session: builds a layer here, times it there (a farm worker)."""

    def __init__(self, pool: BoardPool, sess: Any, board: tuple[str, int]) -> None:
        self.pool, self.sess, self.board = pool, sess, board
        self.name = f"board {board[0]}:{board[1]} ({pool.spec.key})"
        self._n = 0

    def time(self, sig: LayerSignature) -> tuple[Timing, dict]:
        """Build ``sig``'s layer graph (one build at a time per pool) and time it on this board."""
        from edgeprune.backends.tvm.rpc import _first_line
        from edgeprune.profile.farm import RunnerLost
        from edgeprune.profile.layer_onnx import layer_onnx

        self._n += 1
        with tempfile.TemporaryDirectory(prefix="edgeprune-tvm-") as d:
            # a unique name per upload: the board's server dlopen()s by path within one session
            path = Path(d) / f"layer{self._n}.onnx"
            path.write_bytes(layer_onnx(sig).SerializeToString())
            with self.pool.build_lock:  # TVM builds stay serial: the boards time in parallel
                lib, inputs = self.pool.backend.build_onnx(path, self.pool.target, Path(d))
            xs = random_inputs([s for _, s in inputs])
            try:
                timing = LoadedModule(lib, self.pool.kind, self.sess).time(xs, self.pool.protocol)
            except (BadInput, KeyboardInterrupt):
                raise
            except Exception as err:  # noqa: BLE001 - RPCError / TVMError / OSError: the board went away mid-sample
                raise RunnerLost(f"{self.name}: {_first_line(err)}") from None
            try:
                self.sess.remove(lib.name)
            except Exception:  # noqa: BLE001, S110 - best effort: the server cleans its temp dir at session end
                pass
        return timing, {"board": f"{self.board[0]}:{self.board[1]}"}

    def close(self) -> None:
        """End the lease: the board returns to the tracker."""
        from edgeprune.backends.tvm.rpc import free_board

        free_board(self.sess)
        self.sess = None


class BoardPool(RunnerPool):
    """Every board with a remote target's key, each leased once for the whole profile (a farm).

    The first lease waits ``request_timeout_s`` for a board; the others a few seconds
    each (a board busy elsewhere is skipped). ``profile_boards`` caps the count.
    """

    def __init__(self, backend: TvmBackend, target: Target, protocol: TimingProtocol,
                 log: Callable[[str], None] | None = None) -> None:
        import threading

        from edgeprune.backends.tvm.rpc import RemoteSpec, request_board, tracker_summary

        self.backend, self.target, self.protocol, self.log = backend, target, protocol, log
        self.spec = RemoteSpec.parse(target.host)
        self.kind = device_kind(target_dict(target))
        self.build_lock = threading.Lock()
        opts = target.options
        self.timeout = float(opts.get("request_timeout_s", 60))
        self.session_timeout = float(opts.get("session_timeout_s", 0))
        # every board registered under the key (one just released by a previous pool may not show as free yet);
        # the first lease waits as long as a lease may, the others only a few seconds (busy elsewhere: skipped)
        keys = tracker_summary(self.spec.host, self.spec.port)["keys"].get(self.spec.key, {})
        want = max(1, keys.get("total", 0), keys.get("free", 0))
        if int(opts.get("profile_boards", 0)) > 0:
            want = min(want, int(opts["profile_boards"]))
        runners: list[BoardRunner] = []
        try:
            for i in range(want):
                try:
                    sess, board = request_board(self.spec, timeout=self.timeout if i == 0 else min(5.0, self.timeout),
                                                session_timeout=self.session_timeout)
                except BackendUnavailable:
                    if i == 0:
                        raise
                    break
                runners.append(BoardRunner(self, sess, board))
        except BaseException:
            for r in runners:
                r.close()
            raise
        super().__init__(runners, f"{len(runners)} board(s) '{self.spec.key}' on {self.spec.tracker}")

    def replace(self, lost: Any, others_alive: int) -> BoardRunner | None:
        """Lease another board with the key: briefly while others still work, else as long as a lease may wait."""
        from edgeprune.backends.tvm.rpc import request_board

        for _ in range(1 if others_alive else 2):
            try:
                sess, board = request_board(self.spec, timeout=min(5.0, self.timeout) if others_alive else self.timeout,
                                            session_timeout=self.session_timeout)
            except BackendUnavailable:
                continue
            runner = BoardRunner(self, sess, board)
            self.runners.append(runner)
            return runner
        return None


class TvmBackend(Backend):
    """Apache TVM (Relax), local or on boards behind a TVM RPC tracker; timings from ``time_evaluator``."""

    name = "tvm"
    unit = "ms"
    options_schema = TvmOptions
    packages = ("apache-tvm",)
    description = "Apache TVM (Relax) locally or on boards behind a TVM RPC tracker"
    emits_precisions = ("fp32",)  # timing and engines are fp32 Relax graphs: an fp16 label would be fp32 figures

    def precision_support(self, precision: str) -> tuple[bool, str]:
        """fp32 only: the TVM path builds, times and emits fp32 graphs (int8: see :data:`INT8_NOTE`)."""
        if precision == "int8":
            return False, f"the tvm backend builds fp32 graphs only: {INT8_NOTE}"
        if precision != "fp32":
            return False, f"the tvm backend builds fp32 graphs only; {precision} would be fp32 timings under the wrong label"
        return True, ""

    def compile_options(self, calib: Any, int8: bool, exclude: Sequence[str] = ()) -> dict[str, Any]:
        """No options from calibration; ``--int8`` is refused with the reason (:data:`INT8_NOTE`)."""
        if int8:
            raise BadInput(f"--int8 is not offered for TVM targets: {INT8_NOTE}")
        return {}

    def availability(self, target: Target) -> tuple[bool, str]:
        err = tvm_import_error(light=True)
        if err is not None:
            return False, err
        try:
            tdict = target_dict(target, resolve_native=False)  # listing targets must not import tvm
        except BadInput as e:
            return False, f"unavailable: {e}"
        if device_kind(tdict) == "cuda":
            why = cuda_build_error()
            if why:
                return False, f"unavailable: needs CUDA to build ({why})"
        if target.is_remote:
            from edgeprune.backends.tvm.rpc import RemoteSpec, tracker_summary

            spec = RemoteSpec.parse(target.host)
            need = f"needs a TVM RPC tracker at {spec.tracker} with a board under key {spec.key!r}"
            try:
                info = tracker_summary(spec.host, spec.port, timeout=1.0)
            except BackendUnavailable as e:
                return False, f"unavailable: {need} ({e})"
            k = info["keys"].get(spec.key)
            if not k or not (k["total"] or k["free"]):
                return False, f"unavailable: {need} (the tracker has none; see docs/tvm.md)"
        return True, ""

    def _check(self, target: Target) -> None:
        ok, why = self.availability(target) if not target.is_remote else (tvm_import_error() is None, tvm_import_error() or "")
        if not ok:
            raise BackendUnavailable(f"target {target.name}: {why.removeprefix('unavailable: ')}")

    def engine_report(self, engine: Engine) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
        """The tuning budget and what it spent; an engine for an emulated board says so (timings mean nothing)."""
        fields: dict[str, Any] = {}
        rows: list[tuple[str, Any]] = []
        tuning = engine.manifest.get("tuning")
        if tuning:
            fields["tuning"] = tuning
            rows += [
                ("tuning trial budget", tuning["trials_budget"]),
                ("tuning trials spent (this run)", tuning["trials_spent"]),
                ("tuning tasks (tuned now / from database / default schedule)",
                 f"{tuning['tasks_tuned']} / {tuning['tasks_from_database']} / {tuning['tasks_skipped']} of {tuning['tasks']}"),
                ("tuning time (s)", tuning["tune_s"]),
                ("tuning database", tuning["database"]),
            ]
        elif "tune_trials" in engine.manifest:
            rows.append(("tuning trial budget", "0 (untuned: default schedules)"))
        if engine.manifest.get("emulated"):
            fields["emulated"] = True
            rows.append(("board", "EMULATED (QEMU user-mode): correctness only, timings mean nothing"))
        return fields, rows

    def build_onnx(self, onnx_path: str | Path, target: Target, out_dir: Path) -> tuple[Path, list[tuple[str, tuple[int, ...]]]]:
        """Import an ONNX model, build it (untuned) for ``target``, export it into ``out_dir``."""
        mod, inputs = import_onnx(onnx_path)
        ex = build(mod, target)
        return export(ex, target, out_dir, Path(onnx_path).stem), inputs

    def runner_pool(self, target: Target, protocol: TimingProtocol, log: Callable[[str], None] | None = None) -> RunnerPool:
        """A remote target: one runner per free board with its key (``profile_boards`` caps it); local: a pool of one."""
        if not target.is_remote:
            return super().runner_pool(target, protocol, log)
        self._check(target)
        return BoardPool(self, target, protocol, log)

    def time_onnx(self, onnx_path: str | Path, target: Target, protocol: TimingProtocol,
                  disabled_optimizers: Sequence[str] = ()) -> Timing:
        """Build the model (untuned) and time it with ``time_evaluator``, here or on a leased board."""
        self._check(target)
        with tempfile.TemporaryDirectory(prefix="edgeprune-tvm-") as d:
            lib, inputs = self.build_onnx(onnx_path, target, Path(d))
            xs = random_inputs([s for _, s in inputs])
            return on_target(target, lib, lambda m: m.time(xs, protocol))

    def time_module(self, lib_path: str | Path, target: Target, input_shapes: list[tuple[int, ...]], protocol: TimingProtocol) -> Timing:
        """Time an exported module (an engine's ``model.so``/``.tar``) on ``target``."""
        self._check(target)
        xs = random_inputs(input_shapes)
        return on_target(target, Path(lib_path), lambda m: m.time(xs, protocol))

    def run_onnx(self, onnx_path: str | Path, target: Target, x: np.ndarray) -> np.ndarray:
        """Build the model and run ``x`` through it, here or on a leased board."""
        self._check(target)
        with tempfile.TemporaryDirectory(prefix="edgeprune-tvm-") as d:
            lib, _ = self.build_onnx(onnx_path, target, Path(d))
            return on_target(target, lib, lambda m: m.run(x.astype(np.float32)))

    def emit(self, model: nn.Module, target: Target, out_dir: Path, example: Any, options: dict[str, Any]) -> Engine:
        """A Relax module (.so / .tar) built for the target, optionally MetaSchedule-tuned; see :mod:`.emit`."""
        from edgeprune.backends.tvm.emit import emit_tvm

        return emit_tvm(model, target, out_dir, example, options)
