"""Apache TVM emitter: ``model.so`` (or ``model.tar`` when cross-compiled without a cross linker) + ``manifest.json``.

The model is imported with ``torch.export`` and
``tvm.relax.frontend.torch.from_exported_program`` (BatchNorm folded into the
convolutions first), or through ONNX (``options['frontend'] = "onnx"``, and as
the fallback when ``torch.export`` fails). It is built for the target's TVM
target, optionally tuned with MetaSchedule (``tune_trials`` from the target
file or the compile options), and saved atomically. The engine runs here for
local targets and on a leased board (one session kept for the engine's life,
replaced if lost) for remote ones.
"""
from __future__ import annotations

import copy
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeprune.backends.base import Engine
from edgeprune.config import Target
from edgeprune.errors import BackendUnavailable, BadInput
from edgeprune.fileio import write_json


def fold_bn(model: nn.Module) -> tuple[nn.Module, bool]:
    """An eval-mode copy of ``model`` with Conv+BN folded (torch.fx), or the model itself when tracing fails."""
    try:
        from torch.fx.experimental.optimization import fuse

        fused = fuse(copy.deepcopy(model).eval())
        return fused, True
    except Exception:  # noqa: BLE001 - fx tracing fails in many ways: keep the unfolded model
        return model, False


def import_torch(model: nn.Module, example: torch.Tensor) -> tuple[Any, bool]:
    """Relax IRModule of ``model`` via torch.export (weights embedded); also says whether BN was folded."""
    from tvm.relax.frontend.torch import from_exported_program

    folded, ok = fold_bn(model.eval())
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        prog = torch.export.export(folded, (example[:1],))
        return from_exported_program(prog, keep_params_as_input=False, unwrap_unit_return_tuple=True), ok


class _RemoteRunner:
    """Runs an engine on a leased board, keeping one session; a lost board is replaced once per call."""

    def __init__(self, target: Target, lib: Path, kind: str) -> None:
        self.target, self.lib, self.kind = target, lib, kind
        self.module = None

    def _open(self) -> None:
        from edgeprune.backends.tvm.rpc import RemoteSpec, request_board
        from edgeprune.backends.tvm.runtime import LoadedModule

        opts = self.target.options
        sess, _ = request_board(
            RemoteSpec.parse(self.target.host),
            timeout=float(opts.get("request_timeout_s", 60)),
            session_timeout=float(opts.get("session_timeout_s", 0)),
        )
        self.module = LoadedModule(self.lib, self.kind, sess)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        for attempt in range(int(self.target.options.get("attempts", 3))):
            try:
                if self.module is None:
                    self._open()
                return self.module.run(x.astype(np.float32))
            except (BadInput, BackendUnavailable):
                raise
            except Exception as err:  # noqa: BLE001 - RPC/TVM errors of any kind: reconnect and retry
                self.close()
                last = err
        raise BackendUnavailable(f"lost the board running the {self.target.name} engine: {str(last).splitlines()[-1][:200]}")

    def close(self) -> None:
        """Free the board."""
        if self.module is not None:
            from edgeprune.backends.tvm.rpc import free_board

            free_board(self.module.sess)
            self.module = None


def emit_tvm(model: nn.Module, target: Target, out_dir: Path, example: torch.Tensor, options: dict[str, Any]) -> Engine:
    """Import, build (and tune), export; options: ``frontend`` (torch|onnx), ``tune_trials`` (the MetaSchedule
    trial budget), ``tune_dir`` (a tuning database folder instead of the target's one under the user cache), ``log``."""
    from edgeprune.backends.tvm.runtime import (
        LoadedModule,
        build_with_report,
        device_kind,
        export,
        import_onnx,
        is_cross,
        target_dict,
        tvm_import_error,
    )

    err = tvm_import_error()
    if err is not None:
        raise BackendUnavailable(f"cannot compile for {target.name}: {err.removeprefix('unavailable: ')}")
    import tvm

    log = options.get("log")
    frontend = str(options.get("frontend", target.options.get("frontend", "torch")))
    if frontend not in ("torch", "onnx"):
        raise BadInput(f"unknown TVM frontend {frontend!r} (known: torch, onnx)")
    trials = int(options.get("tune_trials", target.options.get("tune_trials", 0)))
    if trials < 0:
        raise BadInput("tune_trials must be >= 0")
    example = example[:1].float()
    t0 = time.perf_counter()
    bn_folded = False
    fallback = None
    if frontend == "torch":
        try:
            mod, bn_folded = import_torch(model, example)
        except Exception as e:  # noqa: BLE001 - torch.export or the Relax translator does not handle the model: try ONNX
            fallback = f"torch.export import failed ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}); used ONNX"
            frontend = "onnx"
    if frontend == "onnx":
        from edgeprune.compile.onnx_export import export_onnx

        onnx_path = export_onnx(model, example, out_dir / "model.onnx")
        mod, _ = import_onnx(onnx_path)
    t_import = time.perf_counter() - t0
    tdict = target_dict(target)
    tune_dir = options.get("tune_dir")
    t0 = time.perf_counter()
    ex, tune_report = build_with_report(mod, target, trials, Path(tune_dir) if tune_dir else None, log)
    t_build = time.perf_counter() - t0
    lib = export(ex, target, out_dir, "model")
    files = {"module": lib}
    if frontend == "onnx" and (out_dir / "model.onnx").exists():
        files["onnx"] = out_dir / "model.onnx"
    with torch.no_grad():
        ref = model.eval()(example)
    out_shape = list(ref.shape) if isinstance(ref, torch.Tensor) else None
    manifest = {
        "target": target.name,
        "backend": "tvm",
        "engine": lib.name,
        "format": lib.suffix.lstrip("."),
        "tvm_version": tvm.__version__,
        "tvm_target": tdict,
        "cross_compiled": is_cross(tdict),
        "emulated": bool(target.options.get("emulated", False)),
        "device": device_kind(tdict),
        "host": target.host,
        "frontend": "torch.export" if frontend == "torch" else "onnx",
        "frontend_note": fallback,
        "bn_folded": bn_folded,
        "tune_trials": trials,
        "tuning": tune_report.to_dict() if tune_report is not None else None,
        "precision": "fp32",
        "input_shape": list(example.shape),
        "output_shape": out_shape,
        "import_s": round(t_import, 3),
        "build_s": round(t_build, 3),
        "threads": target.threads,
    }
    files["manifest"] = write_json(out_dir / "manifest.json", manifest)

    runner = None
    kind = device_kind(tdict)
    if target.is_remote:
        runner = _RemoteRunner(target, lib, kind)
    elif not manifest["cross_compiled"] and lib.suffix == ".so":
        try:
            loaded = LoadedModule(lib, kind)
            runner = lambda x: loaded.run(x.astype(np.float32))
        except Exception:  # noqa: BLE001 - a module that cannot load here just has no in-process runner
            runner = None  # e.g. a CUDA module on a machine without a GPU
    return Engine(target, out_dir, files, manifest, runner)


__all__ = ["emit_tvm", "fold_bn", "import_torch"]
