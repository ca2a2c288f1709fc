"""Every measurement of a run goes through the target's backend: engine files, then its runner (interleaved)
or its whole-engine timing. Latency is in the backend's unit: ms, or simulated cycles (VTA)."""
from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeprune.backends.base import Backend, Engine
from edgeprune.config import Target
from edgeprune.pipeline.stages import Clock
from edgeprune.profile.timing import Timing, TimingProtocol

EngineFile = tuple[Path, list[str]]  # the file a backend times, and the ORT optimisers its session disables


@dataclass
class Meter:
    """Times models and engine files on one target, through its backend only."""

    target: Target
    backend: Backend
    example: torch.Tensor
    calib: torch.Tensor | None
    protocol: TimingProtocol
    clock: Clock

    @property
    def unit(self) -> str:
        """``ms``, or ``cycles`` for a simulator."""
        return self.backend.unit

    @property
    def label(self) -> str:
        """The unit as printed: ``ms`` or ``cycles (simulated)``."""
        return self.unit + (" (simulated)" if self.backend.simulated else "")

    def engine_file(self, model: nn.Module, precisions: Mapping[str, str] | None, directory: Path,
                    name: str = "model") -> EngineFile:
        """The file the backend times for ``model`` at ``precisions`` (ONNX, int8 QDQ, or a VTA build)."""
        return self.backend.engine_file(model, self.target, self.example, precisions, self.calib, directory, name)

    def engine_timing_file(self, engine: Engine) -> EngineFile:
        """The timed file of an emitted engine."""
        path, disabled = self.backend.engine_timing_file(engine)
        if path is None:
            raise RuntimeError(f"the {self.target.name} engine has no file its backend can time")
        return path, disabled

    def time(self, files: Mapping[str, EngineFile], repeats: int = 1) -> dict[str, Timing]:
        """Time engine files: interleaved through the backend's runners, else one after another."""
        with self.clock.work("measure"):
            try:
                runners = {n: self.backend.make_runner(p, self.target, dis) for n, (p, dis) in files.items()}
            except NotImplementedError:
                runners = None
            if runners is not None:
                from edgeprune.profile.timing import interleaved

                return interleaved(runners, self.protocol, repeats)
            return {n: self.backend.time_onnx(p, self.target, self.protocol, dis) for n, (p, dis) in files.items()}

    def time_model(self, model: nn.Module, precisions: Mapping[str, str] | None = None) -> Timing:
        """Build ``model``'s engine file in a temporary folder and time it."""
        with tempfile.TemporaryDirectory(prefix="edgeprune-measure-") as d:
            return self.time({"model": self.engine_file(model, precisions, Path(d))})["model"]

    def time_against(self, model: nn.Module, precisions: Mapping[str, str] | None, reference: EngineFile,
                     reference_value: float) -> float:
        """``model`` timed interleaved with a reference engine and rescaled to the reference's earlier value,
        so that a burst of load on a shared machine moves both and cancels out."""
        with tempfile.TemporaryDirectory(prefix="edgeprune-measure-") as d:
            t = self.time({"dense": reference, "cand": self.engine_file(model, precisions, Path(d))}, 2)
        return t["cand"].median * reference_value / max(t["dense"].median, 1e-12)


def cost_of(model: nn.Module, example: torch.Tensor, precisions: Mapping[str, str] | None,
            signatures: Mapping[str, Any] | None = None) -> dict[str, float]:
    """MACs, model bytes (int8 layers at 8 bits) and, given the layer ``signatures``, peak activation memory."""
    from edgeprune.metrics import count_macs, model_bytes

    bits = {n: 8 for n, p in (precisions or {}).items() if p == "int8"}
    out = {"macs": float(count_macs(model, example)), "bytes": float(model_bytes(model, bits))}
    if signatures is not None:
        from edgeprune.budget import DenseContext, get_metric

        out["peak_memory"] = float(get_metric("peak_memory").dense(DenseContext(model, signatures)))
    return out
