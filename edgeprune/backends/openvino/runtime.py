"""OpenVINO CPU runtime: compile an ONNX (or IR) file, run it, time it, and read its performance counters.

``openvino`` is imported inside the functions only (it is an optional extra).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeprune.backends.openvino.counters import OTHER, executed, layer_of_counter, onnx_output_producers
from edgeprune.backends.openvino.options import OpenVinoOptions
from edgeprune.profile.timing import Timing, TimingProtocol, collect

if TYPE_CHECKING:
    from edgeprune.config import Target

DEVICE = "CPU"


def compile_config(target: Target, perf_count: bool = False) -> dict[str, Any]:
    """The CPU plugin's properties for ``target``: its threads, one stream, latency hint, precision hint."""
    opts = OpenVinoOptions.from_target(target)
    return {
        "INFERENCE_NUM_THREADS": int(target.threads),
        "NUM_STREAMS": 1,
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": opts.inference_precision,
        "PERF_COUNT": bool(perf_count),
    }


def compile_model(path: str | Path, target: Target, perf_count: bool = False) -> Any:
    """``openvino.Core().compile_model(path, "CPU", config)`` for an ONNX file or an IR ``.xml``."""
    import openvino as ov

    return ov.Core().compile_model(str(path), DEVICE, compile_config(target, perf_count))


def random_inputs(compiled: Any, seed: int = 0) -> dict[int, np.ndarray]:
    """Random inputs of the compiled model's (static) input shapes, batch 1 where dynamic."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for i, port in enumerate(compiled.inputs):
        shape = [d.get_length() if d.is_static else 1 for d in port.get_partial_shape()]
        et = port.get_element_type().get_type_name()
        dtype = np.float32 if et.startswith("f") else np.int64
        feeds[i] = rng.standard_normal(shape).astype(dtype)
    return feeds


def make_runner(onnx_path: str | Path, target: Target) -> Callable[[], Any]:
    """A zero-argument callable running the model once on fixed random inputs (for interleaved timing)."""
    compiled = compile_model(onnx_path, target)
    request = compiled.create_infer_request()
    feeds = random_inputs(compiled)
    return lambda: request.infer(feeds)


def run_onnx(onnx_path: str | Path, target: Target, x: np.ndarray) -> np.ndarray:
    """Run the model once on ``x`` (float32) and return its first output."""
    compiled = compile_model(onnx_path, target)
    return np.asarray(compiled.create_infer_request().infer({0: np.ascontiguousarray(x, dtype=np.float32)})[0])


@dataclass
class CounterTiming:
    """Wall time of many requests of one compiled model, and its performance counters over the same requests.

    OpenVINO's counters are running *averages* since the model was compiled (measured:
    conv1 read 69, 49, 39, 34, ... 23 us over the first requests), so per-request
    values cannot be read off them. The counter figures here are the mean over the
    timed requests, from the difference of the cumulative totals before and after
    them (each counter is truncated to 1 us, so each node's mean is within about
    1 us * total requests / timed requests). Their Timing has median = p10 = p90 = that mean.
    """

    wall: Timing
    counters: Timing  # the sum of the selected nodes' counters, mean per timed request
    total: Timing  # the sum of every executed node's counters, mean per timed request
    layers: dict[str, Timing] = field(default_factory=dict)  # per edgeprune layer (and "other")
    exec_types: dict[str, str] = field(default_factory=dict)  # executed node -> kernel (e.g. brgconv_avx512_f32)
    wall_mean: float = 0.0  # mean wall time of the timed requests (the counters' figures are means too)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        return {"wall": self.wall.to_dict(), "counters": self.counters.to_dict(), "total": self.total.to_dict(),
                "layers": {k: v.to_dict() for k, v in self.layers.items()}, "exec_types": dict(self.exec_types), "wall_mean": self.wall_mean}


def _snapshot(request: Any) -> dict[tuple[str, str], float]:
    return {(name, typ): ms for name, typ, ms in executed(request.get_profiling_info())}


def time_with_counters(path: str | Path, target: Target, protocol: TimingProtocol,
                       select: Callable[[str, str], bool] | None = None,
                       known: Iterable[str] | None = None) -> CounterTiming:
    """Run ``path`` under ``protocol`` (stopping rule on the wall time) with PERF_COUNT on, and read the
    counters' mean over the timed requests: of the nodes ``select(name, type)`` keeps (all by default), of
    every node, and (with ``known``) per edgeprune layer. See :class:`CounterTiming`.
    """
    compiled = compile_model(path, target, perf_count=True)
    request = compiled.create_infer_request()
    feeds = random_inputs(compiled)
    renamed = onnx_output_producers(path) if str(path).endswith(".onnx") else {}
    warm = max(1, protocol.warmup)
    for _ in range(warm):
        request.infer(feeds)
    before = _snapshot(request)

    def round_of(n: int) -> list[float]:
        out = []
        for _ in range(n):
            t0 = time.perf_counter_ns()
            request.infer(feeds)
            out.append((time.perf_counter_ns() - t0) / 1e6)
        return out

    walls = collect(round_of, protocol)
    after = _snapshot(request)
    n = len(walls)
    total_runs = warm + n
    mean = {k: max(0.0, (ms * total_runs - before.get(k, 0.0) * warm) / n) for k, ms in after.items()}
    exec_types = {i.node_name: i.exec_type for i in request.get_profiling_info() if (i.node_name, i.node_type) in mean}

    def const(ms: float) -> Timing:
        return Timing(ms, ms, ms, n)

    layers: dict[str, Timing] = {}
    if known is not None:
        known_list = list(known)
        sums: dict[str, float] = {}
        for (name, typ), ms in mean.items():
            key = layer_of_counter(name, typ, renamed, known_list)
            sums[key] = sums.get(key, 0.0) + ms
        layers = {k: const(v) for k, v in sums.items()}
    selected = sum(ms for (name, typ), ms in mean.items() if select is None or select(name, typ))
    return CounterTiming(Timing.from_samples(walls), const(selected), const(sum(mean.values())), layers, exec_types,
                         sum(walls) / n)


def layer_times(onnx_path: str | Path, target: Target, layers: Iterable[str], protocol: TimingProtocol | None = None) -> CounterTiming:
    """Per-layer times of a whole model from OpenVINO's performance counters.

    ``layers``: the edgeprune layer names (``channel_groups(model).layers``);
    nodes charged to no known layer are summed under ``"other"``. Each layer's
    figure is the mean over the timed requests of its nodes' counters.
    """
    return time_with_counters(onnx_path, target, protocol or TimingProtocol.quick(), known=list(layers))


__all__ = ["OTHER", "CounterTiming", "compile_config", "compile_model", "layer_times", "make_runner",
           "random_inputs", "run_onnx", "time_with_counters"]
