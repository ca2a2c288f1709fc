"""What a backend is: the :class:`Backend` interface, the :class:`Engine` it emits, and the options-schema check.

A backend (``edgeprune/backends/<name>/``) times layers and whole engines on a
target, runs engines for verification and emits the engine files. Everything a
caller would otherwise decide by comparing backend names is an attribute or a
method here (``unit``, ``simulated``, ``int8_model_term``, :meth:`Backend.precision_support`,
:meth:`Backend.verify_threshold`, :meth:`Backend.compile_options`,
:meth:`Backend.engine_report`, :meth:`Backend.check_engine`).
"""
from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeprune.errors import BadInput

if TYPE_CHECKING:
    from torch import nn

    from edgeprune.config import Target
    from edgeprune.graph.signature import LayerSignature
    from edgeprune.profile.farm import RunnerPool
    from edgeprune.profile.timing import Timing, TimingProtocol


@dataclass
class Engine:
    """A compiled model for one target: its files, a manifest, and a way to run it (when possible here)."""

    target: Target
    out_dir: Path
    files: dict[str, Path]
    manifest: dict[str, Any] = field(default_factory=dict)
    runner: Callable[[np.ndarray], np.ndarray] | None = None
    batched: bool = False  # the runner takes a whole batch (else one image at a time: batch-1 engines)

    def onnx_engine(self) -> tuple[Path | None, list[str]]:
        """The ONNX file this engine runs (int8 QDQ when quantised; None if it has none) and the ORT optimisers
        its session disables."""
        return self.files.get("onnx_int8", self.files.get("onnx")), list(self.manifest.get("disabled_optimizers", []))

    def run(self, x: Any) -> np.ndarray:
        """Run the engine on a batch; every output flattened per sample and joined: ``(batch, values)``.

        ``x``: NCHW float32 (numpy or torch), or a tuple/dict of inputs for a multi-input model. A batch-1
        engine runs one sample at a time."""
        return np.concatenate([o.reshape(o.shape[0], -1) for o in self.outputs(x)], 1)

    def outputs(self, x: Any) -> list[np.ndarray]:
        """Run the engine on a batch (a tensor/array, or a tuple/dict of them); every output, batch first."""
        from edgeprune.data.batch import to_numpy

        if self.runner is None:
            raise RuntimeError(f"the {self.target.name} engine cannot run on this machine")
        x = to_numpy(x)
        if self.batched:
            return _as_list(self.runner(x))
        first = next(iter(x.values())) if isinstance(x, dict) else x[0] if isinstance(x, tuple) else x
        n = len(first)
        parts = [_as_list(self.runner(_slice(x, i))) for i in range(n)]
        return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]


def _slice(x: Any, i: int) -> Any:
    if isinstance(x, dict):
        return {k: v[i : i + 1] for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return tuple(v[i : i + 1] for v in x)
    return x[i : i + 1]


def _as_list(out: Any) -> list[np.ndarray]:
    """A runner's result as a list of arrays with a batch dimension."""
    if isinstance(out, (list, tuple)):
        return [np.asarray(o).reshape(1, -1) if np.asarray(o).ndim == 0 else np.asarray(o) for o in out]
    a = np.asarray(out)
    return [a.reshape(1, -1) if a.ndim <= 1 else a]


def option_names(schema: type | None) -> list[str]:
    """The ``[options]`` keys a schema dataclass declares (its field names)."""
    return [f.name for f in dataclasses.fields(schema)] if schema is not None else []


def check_options(schema: type | None, options: Mapping[str, Any], where: str) -> None:
    """Raise a one-line :class:`BadInput` when ``options`` has a key ``schema`` does not declare."""
    known = option_names(schema)
    for key in options:
        if key not in known:
            raise BadInput(f"{where}: unknown option {key!r} (known: {', '.join(known) or 'none'})")


def onnx_engine_file(model: nn.Module, target: Target, example: Any, precisions: Mapping[str, str] | None, calib: Any,
                     directory: Path, name: str = "model") -> tuple[Path, list[str]]:
    """Export ``model`` to ``directory/<name>.onnx``; when some layers are int8, quantise to QDQ keeping the others fp32.

    Returns the engine path and the ORT optimisers its session must disable.
    """
    from edgeprune.compile.onnx_export import export_onnx

    fp32 = export_onnx(model, example, Path(directory) / f"{name}.onnx")
    precisions = dict(precisions or {})
    if not any(p == "int8" for p in precisions.values()):
        return fp32, []
    from edgeprune.quant.names import model_exclusions
    from edgeprune.quant.ort_int8 import quantize_onnx

    keep_fp32 = [n for n, p in precisions.items() if p != "int8"]
    from edgeprune.data.batch import calibration_arrays

    calib = calibration_arrays(calib)
    with model_exclusions():
        q = quantize_onnx(fp32, Path(directory) / f"{name}.int8.onnx", target, calib=calib, exclude=keep_fp32)
    return q.path, list(q.disabled_optimizers)


class Backend(ABC):
    """Builds an executable for a whole ONNX model or one layer configuration, times it on a target, and emits engines."""

    name: str = ""
    unit: str = "ms"  # "ms", or "cycles" for a simulator
    simulated: bool = False  # figures are simulated (and must be labelled so)
    options_schema: type | None = None  # a @dataclass whose fields are the known [options] keys
    int8_model_term: bool = False  # the profiler times int8 whole models to fit the int8 term's own scale
    qdq_int8: bool = False  # runs edgeprune's QDQ ONNX (edgeprune.quant.ort_int8) as int8 kernels
    int8_only: bool = False  # every engine is int8 whatever a plan's precisions say (an int8 accelerator)
    packages: tuple[str, ...] = ()  # pip distributions whose versions are recorded next to figures
    description: str = ""
    # precisions this backend both measures and emits; a target file listing another is refused by
    # load_target (None: no fixed list, :meth:`precision_support` decides per machine)
    emits_precisions: tuple[str, ...] | None = None

    # ------------------------------------------------------------------ target checks

    @abstractmethod
    def availability(self, target: Target) -> tuple[bool, str]:
        """(True, "") when this backend can run ``target`` here, else (False, reason)."""

    def check_options(self, options: Mapping[str, Any], where: str) -> None:
        """Refuse an ``[options]`` key the backend does not know (one-line :class:`BadInput`)."""
        check_options(self.options_schema, options, where)

    def precision_support(self, precision: str) -> tuple[bool, str]:
        """(True, "") when layers of ``precision`` can be timed here, else (False, why)."""
        return True, ""

    # ------------------------------------------------------------------ timing

    @abstractmethod
    def time_onnx(self, onnx_path: str | Path, target: Target, protocol: TimingProtocol,
                  disabled_optimizers: Sequence[str] = ()) -> Timing:
        """Time a whole ONNX model (batch 1) on ``target``."""

    def time_layer(self, sig: LayerSignature, target: Target, protocol: TimingProtocol) -> Timing:
        """Time one layer configuration (default: build its ONNX graph and time that)."""
        import tempfile

        from edgeprune.profile.layer_onnx import layer_onnx

        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "layer.onnx"
            path.write_bytes(layer_onnx(sig).SerializeToString())
            return self.time_onnx(path, target, protocol)

    def time_layer_detail(self, sig: LayerSignature, target: Target, protocol: TimingProtocol) -> tuple[Timing, dict]:
        """:meth:`time_layer` plus what the backend chose for the layer (e.g. ``{"layout": "nchwc"}``)."""
        return self.time_layer(sig, target, protocol), {}

    def engine_file(self, model: nn.Module, target: Target, example: Any, precisions: Mapping[str, str] | None,
                    calib: Any, directory: Path, name: str = "model") -> tuple[Path, list[str]]:
        """Write the file :meth:`time_onnx` / :meth:`make_runner` time for a whole model; return it and the ORT
        optimisers its session must disable.

        Default: the ONNX export, quantised to int8 QDQ (``calib``: NCHW tensor or None) when ``precisions``
        has int8 layers and the backend runs QDQ as int8 (:attr:`qdq_int8`); the other layers stay fp32.
        """
        return onnx_engine_file(model, target, example, precisions if self.qdq_int8 else None, calib, directory, name)

    def engine_timing_file(self, engine: Engine) -> tuple[Path | None, list[str]]:
        """The file of an emitted engine that :meth:`time_onnx` times, and the optimisers it disables."""
        return engine.onnx_engine()

    def runner_pool(self, target: Target, protocol: TimingProtocol, log: Callable[[str], None] | None = None) -> RunnerPool:
        """The runners that time layer samples for ``target`` in parallel (:mod:`edgeprune.profile.farm`).

        Default: a pool of one, :meth:`time_layer_detail` on this machine. A backend
        reaching several devices (boards behind a TVM RPC tracker) returns one runner
        per free device; the caller closes the pool (it is a context manager).
        """
        from edgeprune.profile.farm import BackendRunner, RunnerPool

        return RunnerPool([BackendRunner(self, target, protocol)], f"{target.name} on this machine")

    def make_runner(self, onnx_path: str | Path, target: Target, disabled_optimizers: Sequence[str] = ()) -> Callable[[], Any]:
        """A zero-argument callable running the model once on fixed random inputs (for interleaved timing).

        Backends that cannot hand out a runner raise NotImplementedError; callers
        then time models one after another with :meth:`time_onnx`.
        """
        raise NotImplementedError(f"backend {self.name} has no in-process runner")

    def run_onnx(self, onnx_path: str | Path, target: Target, x: np.ndarray) -> np.ndarray:
        """Run a whole model once on ``x`` and return its output (for verification)."""
        raise NotImplementedError(f"backend {self.name} cannot run models here")

    # ------------------------------------------------------------------ engines

    def emit(self, model: nn.Module, target: Target, out_dir: Path, example: Any, options: dict[str, Any]) -> Engine:
        """Write the engine of ``model`` for ``target`` into ``out_dir`` (files + manifest.json)."""
        raise NotImplementedError(f"backend {self.name} has no emitter")

    def compile_options(self, calib: Any, int8: bool, exclude: Sequence[str] = ()) -> dict[str, Any]:
        """Emitter options from a calibration batch (NCHW tensor or None) and ``--int8``; ``exclude``: layers that
        stay fp32 in an int8 engine (a plan's fp32 layers)."""
        if int8:
            raise BadInput(f"--int8 does not apply to {self.name} targets")
        return {}

    def plan_options(self, precisions: Mapping[str, str]) -> dict[str, Any]:
        """Emitter options a plan's per-layer precisions ask for (e.g. ``{"precision": "fp16"}``); none by default
        (int8 goes through :meth:`compile_options`)."""
        return {}

    def verify_threshold(self, quantized: bool) -> float:
        """The minimum top-1 agreement (%) of an engine with PyTorch for verification to pass."""
        return 90.0

    def verify_error_threshold(self, quantized: bool) -> float:
        """The largest relative output error (mean |engine - torch| / mean |torch|) for verification to pass
        where top-1 agreement cannot decide (random inputs, outputs that are not logits): 1e-3 for a float
        engine, 0.1 for an int8 one (ResNet-20 int8 on ORT: 0.03-0.08 on random inputs)."""
        return 0.1 if quantized else 1e-3

    def engine_report(self, engine: Engine) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
        """Extra fields for the compile report and extra rows for its table (none by default)."""
        return {}, []

    def check_engine(self, engine: Engine) -> str | None:
        """A failure message when the emitted engine fails the backend's own check, else None."""
        return None
