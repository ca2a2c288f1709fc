"""The OpenVINO backend object (``cpu-openvino``): Intel's inference runtime, CPU plugin.

Light on purpose: importing this package registers the backend and imports no
``openvino``; :mod:`.runtime` (compile, run, time, performance counters) and
:mod:`.emit` (engine files) import it when called. Install with
``pip install edgeprune[openvino]``.
"""
from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeprune.backends.base import Backend, Engine
from edgeprune.backends.openvino.options import OpenVinoOptions

if TYPE_CHECKING:
    import torch
    from torch import nn

    from edgeprune.config import Target
    from edgeprune.graph.signature import LayerSignature
    from edgeprune.profile.timing import Timing, TimingProtocol


class OpenVinoBackend(Backend):
    """OpenVINO CPU plugin; threads from the target file, one stream, latency hint."""

    name = "openvino"
    unit = "ms"
    simulated = False
    options_schema = OpenVinoOptions
    packages = ("openvino",)
    int8_model_term = True  # int8 engines are the same QDQ ONNX as ORT's, timed whole like ORT's
    qdq_int8 = True  # runs the QDQ ONNX as int8
    description = "OpenVINO CPU plugin (Intel edge CPUs)"

    def availability(self, target: Target) -> tuple[bool, str]:
        """Available when ``openvino`` imports and the target runs locally."""
        try:
            import openvino  # noqa: F401
        except ImportError:
            return False, "unavailable: openvino not installed (pip install edgeprune[openvino])"
        if target.is_remote:
            return False, "unavailable: the openvino backend runs locally only"
        OpenVinoOptions.from_target(target)
        return True, ""

    def time_onnx(self, onnx_path: str | Path, target: Target, protocol: TimingProtocol,
                  disabled_optimizers: tuple[str, ...] | list[str] = ()) -> Timing:
        """Wall-clock time of whole requests (``disabled_optimizers`` is ORT's and ignored here)."""
        from edgeprune.profile.timing import measure

        return measure(self.make_runner(onnx_path, target), protocol)

    def make_runner(self, onnx_path: str | Path, target: Target,
                    disabled_optimizers: tuple[str, ...] | list[str] | None = ()) -> Any:
        """A zero-argument run of the compiled model on fixed random inputs."""
        from edgeprune.backends.openvino.runtime import make_runner

        return make_runner(onnx_path, target)

    def run_onnx(self, onnx_path: str | Path, target: Target, x: np.ndarray) -> np.ndarray:
        """The model's first output on ``x`` (verification)."""
        from edgeprune.backends.openvino.runtime import run_onnx

        return run_onnx(onnx_path, target, x)

    def time_layer(self, sig: LayerSignature, target: Target, protocol: TimingProtocol) -> Timing:
        """The layer's own time from the performance counters (see :meth:`time_layer_detail`)."""
        return self.time_layer_detail(sig, target, protocol)[0]

    def time_layer_detail(self, sig: LayerSignature, target: Target, protocol: TimingProtocol) -> tuple[Timing, dict]:
        """Time one layer graph (fp32, or int8 QDQ) from OpenVINO's performance counters.

        The returned timing is the per-request sum of the counters of the layer's
        own nodes: everything executed except the layout ``Reorder`` nodes at the
        isolated graph's edges (in a whole model the blocked layout flows from
        layer to layer). The metadata gives the whole request's wall time, the
        total of all counters, the reorders' share and the kernels chosen.
        """
        from edgeprune.backends.openvino.runtime import time_with_counters
        from edgeprune.profile.layer_onnx import layer_onnx

        with tempfile.TemporaryDirectory() as d:
            if sig.dtype == "int8":
                path = _quantize_layer(Path(d), sig, target)
            elif sig.dtype == "fp32":
                path = Path(d) / "layer.onnx"
                path.write_bytes(layer_onnx(sig).SerializeToString())
            else:
                raise NotImplementedError(f"the openvino backend does not time {sig.dtype} layers")
            ct = time_with_counters(path, target, protocol, select=lambda _name, node_type: node_type != "Reorder")
        kernels = sorted(set(ct.exec_types.values()))
        meta = {
            "request_ms": ct.wall.median,
            "counters_total_ms": ct.total.median,
            "reorder_ms": max(0.0, ct.total.median - ct.counters.median),
            "nodes": len(ct.exec_types),
            "kernels": ",".join(kernels),
        }
        return ct.counters, meta

    def layer_times(self, onnx_path: str | Path, target: Target, layers: list[str], protocol: TimingProtocol | None = None) -> dict[str, Timing]:
        """Per-layer times of a whole model from the performance counters (``"other"`` for the rest)."""
        from edgeprune.backends.openvino.runtime import layer_times

        return layer_times(onnx_path, target, layers, protocol).layers

    def compile_options(self, calib: Any, int8: bool, exclude: Sequence[str] = ()) -> dict[str, Any]:
        """``--int8`` quantises to QDQ (OpenVINO runs it as int8), calibrated on ``calib``; ``exclude`` stays fp32."""
        if not int8:
            return {}
        return {"quantize": {"calib": None if calib is None else calib.numpy(), "exclude": list(exclude)}}

    def verify_threshold(self, quantized: bool) -> float:
        """fp32 engines must agree with PyTorch on 99% of images; int8 ones on 90%."""
        return 90.0 if quantized else 99.0

    def emit(self, model: nn.Module, target: Target, out_dir: Path, example: torch.Tensor, options: dict) -> Engine:
        """Engine files (IR or ONNX, fp32 or int8 from QDQ) + manifest; see :mod:`.emit`."""
        from edgeprune.backends.openvino.emit import emit_openvino

        return emit_openvino(model, target, Path(out_dir), example, dict(options))


def _quantize_layer(d: Path, sig: LayerSignature, target: Target) -> Path:
    """QDQ int8 variant of a layer graph, calibrated on random data (enough for timing)."""
    import warnings

    from edgeprune.profile.layer_onnx import layer_onnx
    from edgeprune.quant.ort_int8 import quantize_onnx

    fp32 = d / "layer.single.onnx"
    fp32.write_bytes(layer_onnx(sig.with_channels(sig.in_channels, sig.out_channels, "fp32"), residual_input=False).SerializeToString())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Path(quantize_onnx(fp32, d / "layer.int8.onnx", target, calib=None).path)

