"""The ONNX Runtime CUDA backend object (``gpu-ort-cuda``): whole-model and per-layer timing on an NVIDIA GPU.

What is timed:

* a whole model (``time_onnx`` / ``make_runner``): the wall time of one IO-bound run (inputs and outputs stay on
  the GPU; ORT synchronises the stream at the end of a run), so host<->device copies are not timed and the
  kernel-launch cost, which a deployed engine pays too, is;
* one layer configuration (``time_layer_detail``, what the profile tables hold): with ``layer_timing = "auto"``
  the sum of the layer graph's GPU kernel durations read from ORT's profiler (``"cat": "Kernel"`` events, in
  ORT builds with CUDA profiling), else the wall time of an IO-bound run of the layer graph (the pip
  ``onnxruntime-gpu`` wheels write no kernel events, and their node events on CUDA measure only the host's
  enqueue time, so they are never used as GPU time); the metadata says which;
* per layer in a whole model (``layer_times``): the profiler's events charged to layers (:mod:`.events`).

fp16 layers and engines are the fp32 graph converted by :func:`edgeprune.quant.fp16.to_fp16_onnx`. An engine
is all-fp32 or all-fp16: a plan with any fp16 layer is emitted fp16 throughout (on a GPU an fp16 layer is not
slower than its fp32 self, so the measured latency can only fall below the planned one). int8 is not offered:
ORT's CUDA provider runs QDQ int8 only on some GPUs (the TensorRT provider does it properly).

Every function below takes ``provider="cuda"``; ``"cpu"`` runs the same code on ORT's CPU provider (tests).
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeprune.backends.base import Backend, Engine, onnx_engine_file
from edgeprune.backends.ort_cuda.options import OrtCudaOptions

if TYPE_CHECKING:
    from torch import nn

    from edgeprune.backends.ort_cuda.events import ProfiledRuns
    from edgeprune.config import Target
    from edgeprune.graph.signature import LayerSignature
    from edgeprune.profile.timing import Timing, TimingProtocol


class OrtCudaBackend(Backend):
    """ONNX Runtime, CUDA execution provider (cuDNN / cuBLAS kernels), IO binding, fp32 and fp16."""

    name = "ort_cuda"
    unit = "ms"
    options_schema = OrtCudaOptions
    packages = ("onnxruntime-gpu", "onnxruntime")
    emits_precisions = ("fp32", "fp16")
    description = "ONNX Runtime CUDA execution provider on an NVIDIA GPU (ORT profiler per layer), fp32/fp16"

    def availability(self, target: Target) -> tuple[bool, str]:
        """Available when ORT here lists the CUDA execution provider and the target runs locally."""
        from edgeprune.backends.ort_cuda.session import cuda_available

        if target.is_remote:
            return False, "unavailable: the ort_cuda backend runs on the machine with the GPU (host = \"local\")"
        OrtCudaOptions.from_target(target)
        return cuda_available()

    def precision_support(self, precision: str) -> tuple[bool, str]:
        """fp32 and fp16 (see the module doc for int8)."""
        if precision in ("fp32", "fp16"):
            return True, ""
        return False, "the ort_cuda backend times fp32 and fp16 only (ORT's CUDA provider has no general int8 path)"

    def time_onnx(self, onnx_path: str | Path, target: Target, protocol: TimingProtocol,
                  disabled_optimizers: Sequence[str] = ()) -> Timing:
        """Wall time of IO-bound runs of the whole model (see the module doc)."""
        from edgeprune.profile.timing import measure

        return measure(self.make_runner(onnx_path, target, disabled_optimizers), protocol)

    def make_runner(self, onnx_path: str | Path, target: Target, disabled_optimizers: Sequence[str] = (),
                    provider: str = "cuda") -> Any:
        """One IO-bound run of the model on fixed random inputs per call."""
        from edgeprune.backends.ort_cuda.session import BoundRun, make_session

        return BoundRun(make_session(onnx_path, target, provider=provider, disabled_optimizers=disabled_optimizers),
                        target, provider)

    def run_onnx(self, onnx_path: str | Path, target: Target, x: np.ndarray) -> np.ndarray:
        """The model's first output on ``x`` (verification)."""
        from edgeprune.backends.ort_cuda.session import make_session, run_numpy

        return run_numpy(make_session(onnx_path, target), x)

    def time_layer(self, sig: LayerSignature, target: Target, protocol: TimingProtocol) -> Timing:
        """One layer configuration at ``sig.dtype`` (see :meth:`time_layer_detail`)."""
        return self.time_layer_detail(sig, target, protocol)[0]

    def time_layer_detail(self, sig: LayerSignature, target: Target, protocol: TimingProtocol) -> tuple[Timing, dict]:
        """One layer configuration, timed as the module doc says; the metadata names the method used."""
        return time_layer_on(sig, target, protocol)

    def layer_times(self, onnx_path: str | Path, target: Target, layers: Iterable[str],
                    protocol: TimingProtocol | None = None) -> dict[str, Timing]:
        """Per-layer times of a whole model from ORT's profiler (``"other"`` for the rest); see :func:`layer_times`."""
        return layer_times(onnx_path, target, layers, protocol)[0]

    def engine_file(self, model: nn.Module, target: Target, example: Any, precisions: Mapping[str, str] | None,
                    calib: Any, directory: Path, name: str = "model") -> tuple[Path, list[str]]:
        """The ONNX export, converted to fp16 when the plan has any fp16 layer (module doc)."""
        fp32, _ = onnx_engine_file(model, target, example, None, None, directory, name)
        if engine_precision(target, precisions) == "fp32":
            return fp32, []
        from edgeprune.quant.fp16 import to_fp16_onnx

        return to_fp16_onnx(fp32, Path(directory) / f"{name}.fp16.onnx"), []

    def plan_options(self, precisions: Mapping[str, str]) -> dict[str, Any]:
        """``{"precision": "fp16"}`` when the plan has an fp16 layer (the engine is then fp16 throughout)."""
        return {"precision": "fp16"} if any(p == "fp16" for p in precisions.values()) else {}

    def emit(self, model: nn.Module, target: Target, out_dir: Path, example: Any, options: dict[str, Any]) -> Engine:
        """``model.onnx`` (fp32) or ``model.fp16.onnx`` + ``manifest.json``; see :mod:`.emit`."""
        from edgeprune.backends.ort_cuda.emit import emit_ort_cuda

        return emit_ort_cuda(model, target, Path(out_dir), example, dict(options))

    def verify_threshold(self, quantized: bool) -> float:
        """Engines (fp32 or fp16) must agree with PyTorch on 99% of images."""
        return 99.0

    def verify_error_threshold(self, quantized: bool) -> float:
        """5e-3 relative output error: fp16 engines (10-bit mantissa) land near 1e-3 on random inputs."""
        return 5e-3


def engine_precision(target: Target, precisions: Mapping[str, str] | None) -> str:
    """``fp16`` when a plan has any fp16 layer; with no plan, the target's ``options.precision``."""
    if precisions:
        return "fp16" if any(p == "fp16" for p in precisions.values()) else "fp32"
    return OrtCudaOptions.from_target(target).precision


def profile_runs(onnx_path: str | Path, target: Target, protocol: TimingProtocol, provider: str = "cuda",
                 table: Mapping[str, str] | None = None, known: Iterable[str] | None = None,
                 single: str | None = None) -> tuple[ProfiledRuns, list[float]]:
    """Run ``onnx_path`` IO-bound under ORT's profiler (warm-up, then the protocol's stopping rule on the wall time)
    and charge the profile to layers; returns the timed runs' profile (warm-up runs dropped) and wall times (ms)."""

    from edgeprune.backends.ort_cuda.events import charge_runs, load_events
    from edgeprune.backends.ort_cuda.session import BoundRun, make_session
    from edgeprune.profile.timing import collect, wall_rounds

    with tempfile.TemporaryDirectory(prefix="edgeprune-ortprof-") as d:
        sess = make_session(onnx_path, target, profiling=True, provider=provider, profile_prefix=os.path.join(d, "prof"))
        run = BoundRun(sess, target, provider)
        warm = max(1, protocol.warmup)
        for _ in range(warm):
            run()
        walls = collect(wall_rounds(run), protocol)
        events = load_events(sess.end_profiling())
    prof = charge_runs(events, table, set(known) if known is not None else None, single)
    prof.runs = prof.runs[warm:]
    return prof, walls


def layer_graph(sig: LayerSignature, directory: Path) -> Path:
    """The ONNX file of one layer configuration at ``sig.dtype`` (fp16: converted, fp16 inputs, no Casts)."""
    from edgeprune.profile.layer_onnx import layer_onnx

    path = Path(directory) / "layer.onnx"
    path.write_bytes(layer_onnx(sig.with_channels(sig.in_channels, sig.out_channels, "fp32")).SerializeToString())
    if sig.dtype == "fp32":
        return path
    if sig.dtype != "fp16":
        raise NotImplementedError(f"the ort_cuda backend does not time {sig.dtype} layers")
    from edgeprune.quant.fp16 import to_fp16_onnx

    return to_fp16_onnx(path, Path(directory) / "layer.fp16.onnx", keep_io_fp32=False)


def time_layer_on(sig: LayerSignature, target: Target, protocol: TimingProtocol, provider: str = "cuda") -> tuple[Timing, dict]:
    """Time one layer graph on ``provider`` (see the module doc); metadata: ``layer_timing`` (``kernels`` |
    ``nodes`` | ``wall``), the wall-clock median, the kernel events seen."""
    from edgeprune.profile.timing import Timing, measure

    how = OrtCudaOptions.from_target(target).layer_timing
    meta: dict[str, Any] = {"precision": sig.dtype, "provider": provider}
    with tempfile.TemporaryDirectory(prefix="edgeprune-ortcuda-") as d:
        path = layer_graph(sig, Path(d))
        if how == "auto":
            prof, walls = profile_runs(path, target, protocol, provider, single="layer")
            meta.update(kernel_events=prof.kernel_events, wall_ms=float(np.median(walls)))
            if prof.device_timed and prof.runs:
                meta["layer_timing"] = "kernels" if prof.kernel_events else "nodes"
                return Timing.from_samples(prof.totals()), meta
            meta["why_wall"] = "no CUDA kernel events (this ORT build has no CUDA profiling)"
        meta["layer_timing"] = "wall"
        from edgeprune.backends.ort_cuda.session import BoundRun, make_session

        return measure(BoundRun(make_session(path, target, provider=provider), target, provider), protocol), meta


def layer_times(onnx_path: str | Path, target: Target, layers: Iterable[str], protocol: TimingProtocol | None = None,
                provider: str = "cuda") -> tuple[dict[str, Timing], ProfiledRuns]:
    """Per-layer times of a whole model from ORT's profiler, charged to ``layers`` (the rest under ``"other"``).

    On CUDA the figures are GPU kernel time only in ORT builds with CUDA profiling; otherwise they are host
    enqueue times (``ProfiledRuns.device_timed`` is False then: do not read them as GPU time).
    """
    from edgeprune.backends.ort_cuda.events import onnx_name_table
    from edgeprune.profile.timing import Timing, TimingProtocol

    known = list(layers)
    prof, _ = profile_runs(onnx_path, target, protocol or TimingProtocol.quick(), provider,
                           table=onnx_name_table(onnx_path, known), known=known)
    names = sorted({k for r in prof.runs for k in r})
    return {k: Timing.from_samples(prof.layer(k)) for k in names}, prof
