"""Profiler backends: one runner per backend, registered by name (ort, tvm, trt, vta)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgeprune.profile.timing import Timing, TimingProtocol
from edgeprune.registry import Registry

if TYPE_CHECKING:
    from edgeprune.config import Target
    from edgeprune.graph.signature import LayerSignature


class Backend(ABC):
    """Builds an executable for a whole ONNX model or one layer configuration, and times it on a target."""

    name: str = ""
    unit: str = "ms"

    @abstractmethod
    def availability(self, target: Target) -> tuple[bool, str]:
        """(True, "") when this backend can run ``target`` here, else (False, reason)."""

    @abstractmethod
    def time_onnx(self, onnx_path: str | Path, target: Target, protocol: TimingProtocol) -> Timing:
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

    def make_runner(self, onnx_path: str | Path, target: Target):
        """A zero-argument callable running the model once on fixed random inputs (for interleaved timing).

        Backends that cannot hand out a runner raise NotImplementedError; the
        profiler then times models one after another with :meth:`time_onnx`.
        """
        raise NotImplementedError(f"backend {self.name} has no in-process runner")

    def run_onnx(self, onnx_path: str | Path, target: Target, x: np.ndarray) -> np.ndarray:
        """Run a whole model once on ``x`` and return its output (for verification)."""
        raise NotImplementedError(f"backend {self.name} cannot run models here")


BACKENDS: Registry[Backend] = Registry("backend")


def get_backend(name: str) -> Backend:
    """The backend registered as ``name`` (imports its module lazily)."""
    _load_all()
    return BACKENDS.get(name)


def backend_availability(target: Target) -> tuple[bool, str]:
    """Whether ``target`` can run here, with the reason when not."""
    _load_all()
    if target.backend not in BACKENDS:
        return False, f"backend {target.backend} not implemented yet"
    return BACKENDS.get(target.backend).availability(target)


def _load_all() -> None:
    # registering modules import only light code; the heavy runtime is imported inside methods
    import importlib

    for mod in ("ort_backend", "tvm_backend", "trt_backend", "vta_backend"):
        try:
            importlib.import_module(f"edgeprune.profile.{mod}")
        except ModuleNotFoundError as err:
            if err.name != f"edgeprune.profile.{mod}":
                raise
