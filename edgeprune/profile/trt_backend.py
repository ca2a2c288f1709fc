"""TensorRT backend (``jetson-*-trt``, ``gpu-trt``): engine builds, CUDA-event timing, per-layer ``IProfiler``.

``tensorrt`` (8.5 or newer; 10.x is what the ``[trt]`` extra installs) and a
CUDA runtime are imported inside functions only, so this module imports on any
machine and the targets list as unavailable with the reason. For device
memory, streams and events it uses ``torch.cuda`` when the installed torch
has CUDA (NVIDIA's Jetson wheels do), else ``cuda-python``'s runtime bindings.

What is measured, and how (see docs/trt.md):

- whole engine (:meth:`TrtBackend.time_onnx`): one ``execute_async_v3`` per
  sample between two CUDA events on the engine's stream, batch 1, with the
  shared :class:`~edgeprune.profile.timing.TimingProtocol` (warm-up, rounds
  until the median settles); no profiler is attached to that context.
- per layer (:meth:`TrtBackend.profile_layers`): a second execution context
  with an ``IProfiler``; each run's per-engine-layer times are charged to
  edgeprune layers (:mod:`edgeprune.trt_config`), and the medians over runs
  are reported. Profiling adds a little per-layer overhead, so per-layer
  numbers sum to slightly more than the event-timed engine.
- one layer configuration (:meth:`TrtBackend.time_layer`, for the latency
  tables): its standalone graph is built at the signature's precision
  (int8 with symmetric Q/DQ on input, weights and residual) and timed like a
  layer inside a model, by the profiler (``options.layer_timing = "profiler"``,
  the default) or by events around the whole tiny engine (``"events"``).
"""
from __future__ import annotations

import collections
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeprune.errors import BackendUnavailable, BadInput
from edgeprune.profile.backends import BACKENDS, Backend
from edgeprune.profile.timing import Timing, TimingProtocol
from edgeprune.trt_config import (
    OTHER,
    LayerMap,
    TrtBuildSpec,
    build_layer_map,
    build_spec,
    check_qdq_for_tensorrt,
)

if TYPE_CHECKING:
    from edgeprune.config import Target
    from edgeprune.graph.signature import LayerSignature

MIN_TRT = (8, 5)  # set_tensor_address / execute_async_v3 / num_io_tensors


# --------------------------------------------------------------------------- imports and availability


def import_tensorrt() -> Any:
    """``tensorrt``, or :class:`BackendUnavailable` with the reason."""
    try:
        import tensorrt as trt
    except ImportError as err:
        raise BackendUnavailable(f"unavailable: tensorrt not installed ({err}); pip install 'edgeprune[trt]' where a GPU is") from None
    if trt_version(trt) < MIN_TRT:
        raise BackendUnavailable(f"unavailable: tensorrt {trt.__version__} is older than {'.'.join(map(str, MIN_TRT))}")
    return trt


def trt_version(trt: Any) -> tuple[int, int]:
    """(major, minor) of an imported tensorrt."""
    parts = str(getattr(trt, "__version__", "0.0")).split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        return (0, 0)


def cuda_status() -> tuple[bool, str]:
    """(True, GPU name) when a CUDA device is usable through torch or cuda-python, else (False, reason)."""
    try:
        import torch

        if torch.cuda.is_available():
            return True, torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001, S110 - a broken torch install must not hide cuda-python
        pass
    try:
        cudart = _cudart()
    except ImportError:
        return False, "unavailable: no CUDA GPU (torch has no CUDA here and cuda-python is not installed)"
    err, count = cudart.cudaGetDeviceCount()
    if err != cudart.cudaError_t.cudaSuccess or count < 1:
        return False, f"unavailable: no CUDA GPU ({err})"
    err, props = cudart.cudaGetDeviceProperties(0)
    name = props.name.decode(errors="replace").strip("\x00") if err == cudart.cudaError_t.cudaSuccess else "CUDA GPU"
    return True, name


def _cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        from cuda import cudart  # older cuda-python
    return cudart


# --------------------------------------------------------------------------- CUDA memory, streams, events


class _Buffer:
    def __init__(self, ptr: int, nbytes: int, keep: Any = None) -> None:
        self.ptr, self.nbytes, self.keep = ptr, nbytes, keep


class _TorchCuda:
    """Device memory, one stream and event timing through ``torch.cuda``."""

    def __init__(self) -> None:
        import torch

        self.torch = torch
        self.stream = torch.cuda.Stream()
        self.handle = int(self.stream.cuda_stream)

    def alloc(self, nbytes: int) -> _Buffer:
        t = self.torch.empty(max(nbytes, 1), dtype=self.torch.uint8, device="cuda")
        return _Buffer(int(t.data_ptr()), nbytes, t)

    def upload(self, buf: _Buffer, arr: np.ndarray) -> None:
        src = self.torch.from_numpy(np.ascontiguousarray(arr).reshape(-1).view(np.uint8))
        buf.keep[: src.numel()].copy_(src)
        self.torch.cuda.synchronize()

    def download(self, buf: _Buffer, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        self.stream.synchronize()
        raw = buf.keep[: buf.nbytes].cpu().numpy()
        return raw.view(dtype).reshape(shape).copy()

    def sync(self) -> None:
        self.stream.synchronize()

    def time_ms(self, fn: Callable[[], None]) -> float:
        start = self.torch.cuda.Event(enable_timing=True)
        end = self.torch.cuda.Event(enable_timing=True)
        start.record(self.stream)
        fn()
        end.record(self.stream)
        end.synchronize()
        return float(start.elapsed_time(end))

    def free(self, buf: _Buffer) -> None:
        buf.keep = None


class _CudaPython:
    """The same through ``cuda-python``'s runtime bindings (when torch has no CUDA)."""

    def __init__(self) -> None:
        self.rt = _cudart()
        self.stream = self._ok(self.rt.cudaStreamCreate())
        self.handle = int(self.stream)
        self.start = self._ok(self.rt.cudaEventCreate())
        self.end = self._ok(self.rt.cudaEventCreate())

    def _ok(self, result: Any) -> Any:
        err = result[0] if isinstance(result, tuple) else result
        if err != self.rt.cudaError_t.cudaSuccess:
            raise RuntimeError(f"CUDA error: {err}")
        if isinstance(result, tuple) and len(result) > 1:
            return result[1] if len(result) == 2 else result[1:]
        return None

    def alloc(self, nbytes: int) -> _Buffer:
        return _Buffer(int(self._ok(self.rt.cudaMalloc(max(nbytes, 1)))), nbytes)

    def upload(self, buf: _Buffer, arr: np.ndarray) -> None:
        arr = np.ascontiguousarray(arr)
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._ok(self.rt.cudaMemcpy(buf.ptr, arr.ctypes.data, arr.nbytes, kind))

    def download(self, buf: _Buffer, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        self.sync()
        out = np.empty(shape, dtype=dtype)
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._ok(self.rt.cudaMemcpy(out.ctypes.data, buf.ptr, out.nbytes, kind))
        return out

    def sync(self) -> None:
        self._ok(self.rt.cudaStreamSynchronize(self.stream))

    def time_ms(self, fn: Callable[[], None]) -> float:
        self._ok(self.rt.cudaEventRecord(self.start, self.stream))
        fn()
        self._ok(self.rt.cudaEventRecord(self.end, self.stream))
        self._ok(self.rt.cudaEventSynchronize(self.end))
        return float(self._ok(self.rt.cudaEventElapsedTime(self.start, self.end)))

    def free(self, buf: _Buffer) -> None:
        if buf.ptr:
            self.rt.cudaFree(buf.ptr)
            buf.ptr = 0


def _cuda() -> Any:
    try:
        import torch

        if torch.cuda.is_available():
            return _TorchCuda()
    except ImportError:
        pass
    ok, reason = cuda_status()
    if not ok:
        raise BackendUnavailable(reason)
    return _CudaPython()


# --------------------------------------------------------------------------- TensorRT objects

_LOGGER: Any = None


def trt_logger(trt: Any) -> Any:
    """One process-wide ``trt.ILogger`` that keeps the last warnings/errors for error messages."""
    global _LOGGER
    if _LOGGER is None:

        class _Logger(trt.ILogger):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)
                self.messages: collections.deque[str] = collections.deque(maxlen=20)

            def log(self, severity: Any, msg: str) -> None:
                if int(severity) <= int(trt.ILogger.Severity.WARNING):
                    self.messages.append(f"{getattr(severity, 'name', severity)}: {msg}")

        _LOGGER = _Logger()
    return _LOGGER


def _last_errors(trt: Any) -> str:
    msgs = [m for m in trt_logger(trt).messages if "ERROR" in m]
    return msgs[-1] if msgs else "see the TensorRT log"


def _parser_error(err: Any) -> str:
    desc = err.desc() if hasattr(err, "desc") else str(err)
    node = err.node_name() if hasattr(err, "node_name") else ""
    return f"{desc} (node {node})" if node else str(desc)


def _host_bytes(mem: Any) -> bytes:
    return bytes(memoryview(mem))


@dataclass
class BuiltEngine:
    """A serialised engine, its inspector JSON and the settings it was built with."""

    plan: bytes
    engine_info: str
    spec: TrtBuildSpec
    trt_version: str
    build_seconds: float
    device: str = ""
    timing_cache_reused: bool = False
    meta: dict[str, Any] = field(default_factory=dict)


def _onnx_has_qdq(onnx_path: Path) -> bool:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


def _load_timing_cache(trt: Any, config: Any, path: Path | None) -> bool:
    """Attach the timing cache at ``path`` (a fresh one when absent or unusable); True when an old one was reused."""
    data = b""
    if path is not None and path.is_file():
        try:
            data = path.read_bytes()
        except OSError:
            data = b""
    cache = config.create_timing_cache(data) if data else None
    reused = cache is not None and bool(config.set_timing_cache(cache, False))
    if not reused:  # no file, another GPU / TensorRT version, or a damaged file: start over
        config.set_timing_cache(config.create_timing_cache(b""), False)
    return reused


def _save_timing_cache(config: Any, path: Path | None) -> None:
    """Write the (grown) timing cache atomically, merging what other builds wrote meanwhile."""
    if path is None:
        return
    from edgeprune.fileio import write_bytes

    cache = config.get_timing_cache()
    if cache is None:
        return
    if path.is_file():
        try:
            other = config.create_timing_cache(path.read_bytes())
            if other is not None:
                cache.combine(other, False)
        except Exception:  # noqa: BLE001, S110 - a foreign or damaged file is simply replaced
            pass
    write_bytes(path, _host_bytes(cache.serialize()))


def build_engine(onnx_path: str | Path, spec: TrtBuildSpec) -> BuiltEngine:
    """Parse ``onnx_path`` and build a serialised engine with ``spec`` (timing cache loaded and saved)."""
    trt = import_tensorrt()
    ok, device = cuda_status()
    if not ok:
        raise BackendUnavailable(device)
    onnx_path = Path(onnx_path)
    if spec.precision == "int8":
        problems = check_qdq_for_tensorrt(onnx_path)
        if problems:
            raise BadInput(f"{onnx_path.name} cannot become an int8 TensorRT engine: {problems[0]}" + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""))
    logger = trt_logger(trt)
    builder = trt.Builder(logger)
    flags = 0
    if trt_version(trt) < (10, 0):  # explicit batch is the only mode from TensorRT 10 on
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errs = [_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BadInput(f"TensorRT cannot parse {onnx_path.name}: {errs[0] if errs else _last_errors(trt)}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, spec.workspace_bytes)
    config.profiling_verbosity = getattr(trt.ProfilingVerbosity, spec.profiling_verbosity)
    for name in spec.flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    for name in spec.clear_flags:
        config.clear_flag(getattr(trt.BuilderFlag, name))
    if spec.optimization_level is not None and hasattr(config, "builder_optimization_level"):
        config.builder_optimization_level = spec.optimization_level
    if spec.dla_core is not None:
        n_dla = int(getattr(builder, "num_DLA_cores", 0))
        if spec.dla_core >= n_dla:
            raise BadInput(f"target {spec.target} asks for DLA core {spec.dla_core}, but this device has {n_dla} DLA core(s)")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = spec.dla_core
    # inputs exported with a symbolic batch get a fixed batch-1 profile (edgeprune times batch 1)
    dynamic = []
    for i in range(network.num_inputs):
        t = network.get_input(i)
        shape = tuple(t.shape)
        if any(d < 0 for d in shape):
            dynamic.append((t.name, tuple(1 if d < 0 else d for d in shape)))
    if dynamic:
        profile = builder.create_optimization_profile()
        for name, shape in dynamic:
            profile.set_shape(name, shape, shape, shape)
        config.add_optimization_profile(profile)
    reused = _load_timing_cache(trt, config, spec.timing_cache)
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - t0
    if serialized is None:
        raise BadInput(f"TensorRT could not build {onnx_path.name} for {spec.target} ({spec.precision}): {_last_errors(trt)}")
    _save_timing_cache(config, spec.timing_cache)
    plan = _host_bytes(serialized)
    runtime = trt.Runtime(logger)
    if spec.dla_core is not None:
        runtime.DLA_core = spec.dla_core
    engine = runtime.deserialize_cuda_engine(plan)
    info = engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON) if engine is not None else "{}"
    return BuiltEngine(plan, info, spec, str(trt.__version__), seconds, device, reused)


class TrtSession:
    """A deserialised engine with device buffers bound, ready to time, profile or run."""

    def __init__(self, plan: bytes, dla_core: int | None = None) -> None:
        trt = import_tensorrt()
        self.trt = trt
        self.cuda = _cuda()
        self.runtime = trt.Runtime(trt_logger(trt))
        if dla_core is not None:
            self.runtime.DLA_core = dla_core
        self.engine = self.runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise BadInput(f"TensorRT cannot load this engine here (other GPU or TensorRT version?): {_last_errors(trt)}")
        self.context = self.engine.create_execution_context()
        self.inputs: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        self.outputs: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        for name in names:
            if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                shape = tuple(self.engine.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    shape = tuple(1 if d < 0 else d for d in shape)
                    self.context.set_input_shape(name, shape)
                self.inputs[name] = (shape, np.dtype(trt.nptype(self.engine.get_tensor_dtype(name))))
        for name in names:
            if name not in self.inputs:
                shape = tuple(self.context.get_tensor_shape(name))
                self.outputs[name] = (shape, np.dtype(trt.nptype(self.engine.get_tensor_dtype(name))))
        self.buffers: dict[str, _Buffer] = {}
        for name, (shape, dtype) in {**self.inputs, **self.outputs}.items():
            self.buffers[name] = self.cuda.alloc(int(np.prod(shape)) * dtype.itemsize)
        self._bind(self.context)
        self.fill_random()

    def _bind(self, context: Any) -> None:
        for name, (shape, _dtype) in self.inputs.items():
            if any(d < 0 for d in self.engine.get_tensor_shape(name)):
                context.set_input_shape(name, shape)
        for name, buf in self.buffers.items():
            context.set_tensor_address(name, buf.ptr)

    def fill_random(self, seed: int = 0) -> None:
        """Random inputs (latency does not depend on values)."""
        rng = np.random.default_rng(seed)
        for name, (shape, dtype) in self.inputs.items():
            arr = rng.standard_normal(shape) if dtype.kind == "f" else rng.integers(0, 2, shape)
            self.cuda.upload(self.buffers[name], arr.astype(dtype))

    def _enqueue(self, context: Any) -> None:
        if not context.execute_async_v3(self.cuda.handle):
            raise RuntimeError(f"TensorRT execute_async_v3 failed: {_last_errors(self.trt)}")

    def run(self, x: np.ndarray) -> np.ndarray:
        """Run once on ``x`` (the single input) and return the first output."""
        name, (shape, dtype) = next(iter(self.inputs.items()))
        x = np.asarray(x)
        if tuple(x.shape) != shape:
            raise BadInput(f"engine input {name} has shape {shape}, got {tuple(x.shape)}")
        self.cuda.upload(self.buffers[name], x.astype(dtype))
        self._enqueue(self.context)
        self.cuda.sync()
        out, (oshape, odtype) = next(iter(self.outputs.items()))
        return self.cuda.download(self.buffers[out], oshape, odtype).astype(np.float32)

    def time_engine(self, protocol: TimingProtocol) -> Timing:
        """Whole-engine latency: one enqueue between two CUDA events per sample, no profiler attached."""
        ctx = self.context
        for _ in range(protocol.warmup):
            self._enqueue(ctx)
        self.cuda.sync()
        samples = _protocol_loop(lambda: self.cuda.time_ms(lambda: self._enqueue(ctx)), protocol)
        return Timing.from_samples(samples)

    def profile(self, protocol: TimingProtocol) -> list[dict[str, float]]:
        """Per-run ``{engine layer: ms}`` from an ``IProfiler`` on a separate context, over the protocol's runs."""
        trt = self.trt
        profiler = _make_profiler(trt)
        ctx = self.engine.create_execution_context()
        self._bind(ctx)
        ctx.profiler = profiler
        explicit = hasattr(ctx, "enqueue_emits_profile")
        if explicit:  # report after the stream is synchronised, not inside enqueue
            ctx.enqueue_emits_profile = False

        def one() -> dict[str, float]:
            self._enqueue(ctx)
            self.cuda.sync()
            if explicit:
                ctx.report_to_profiler()
            return profiler.take()

        for _ in range(protocol.warmup):
            one()
        runs: list[dict[str, float]] = []

        def sample() -> float:
            r = one()
            runs.append(r)
            return sum(r.values())

        _protocol_loop(sample, protocol)
        if not any(runs):
            raise RuntimeError("the TensorRT profiler reported no layer times (engine built with ProfilingVerbosity.NONE?)")
        return runs

    def close(self) -> None:
        """Free device buffers."""
        for buf in self.buffers.values():
            self.cuda.free(buf)
        self.buffers.clear()


def _make_profiler(trt: Any) -> Any:
    class _Profiler(trt.IProfiler):
        """Collects ``report_layer_time`` calls of one run; :meth:`take` hands them over and starts the next."""

        def __init__(self) -> None:
            trt.IProfiler.__init__(self)
            self.current: dict[str, float] = {}

        def report_layer_time(self, layer_name: str, ms: float) -> None:
            self.current[layer_name] = self.current.get(layer_name, 0.0) + float(ms)

        def take(self) -> dict[str, float]:
            out, self.current = self.current, {}
            return out

    return _Profiler()


def _protocol_loop(sample: Callable[[], float], protocol: TimingProtocol) -> list[float]:
    """The shared protocol (rounds until the median settles) around a sampler that returns ms."""
    from edgeprune.profile.timing import collect

    return collect(lambda n: [sample() for _ in range(n)], protocol)


# --------------------------------------------------------------------------- per-layer results


@dataclass
class LayerProfile:
    """Per-layer TensorRT timings of one engine: per edgeprune layer, per engine layer, and the whole engine."""

    engine: Timing
    layers: dict[str, Timing]  # edgeprune layer (or OTHER) -> median over runs of its attributed time
    engine_layers: dict[str, Timing]  # raw IProfiler names -> median over runs
    layer_map: LayerMap
    precision: str
    runs: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        return {
            "engine": self.engine.to_dict(),
            "precision": self.precision,
            "runs": self.runs,
            "layers": {k: v.to_dict() for k, v in self.layers.items()},
            "engine_layers": {k: v.to_dict() for k, v in self.engine_layers.items()},
            "layer_map": self.layer_map.to_dict(),
        }


def summarise_runs(runs: list[dict[str, float]], layer_map: LayerMap) -> tuple[dict[str, Timing], dict[str, Timing]]:
    """Medians over runs: of each edgeprune layer's attributed time, and of each raw engine layer's time."""
    attributed = [layer_map.attribute(r) for r in runs]
    layer_keys = sorted({k for a in attributed for k in a})
    engine_keys = sorted({k for r in runs for k in r})
    per_layer = {k: [a.get(k, 0.0) for a in attributed] for k in layer_keys}
    per_engine = {k: [r.get(k, 0.0) for r in runs] for k in engine_keys}
    return (
        {k: Timing.from_samples(v) for k, v in per_layer.items()},
        {k: Timing.from_samples(v) for k, v in per_engine.items()},
    )


# --------------------------------------------------------------------------- the backend


class TrtBackend(Backend):
    """TensorRT on an NVIDIA GPU or Jetson, run on the machine that has the GPU."""

    name = "trt"
    unit = "ms"

    def availability(self, target: Target) -> tuple[bool, str]:
        if target.is_remote:
            return False, 'unavailable: the trt backend runs on the board itself (host = "local"); see docs/trt.md'
        try:
            import tensorrt as trt
        except ImportError:
            return False, "unavailable: tensorrt not installed"
        if trt_version(trt) < MIN_TRT:
            return False, f"unavailable: tensorrt {trt.__version__} is older than {'.'.join(map(str, MIN_TRT))}"
        ok, text = cuda_status()
        return (True, "") if ok else (False, text)

    def _require(self, target: Target) -> None:
        ok, reason = self.availability(target)
        if not ok:
            raise BackendUnavailable(f"target {target.name}: {reason}")

    def _precision(self, onnx_path: Path, target: Target, precision: str | None) -> str:
        if precision:
            return precision
        return "int8" if _onnx_has_qdq(onnx_path) else _default(target)

    def build(self, onnx_path: str | Path, target: Target, precision: str | None = None) -> BuiltEngine:
        """Build an engine for ``onnx_path`` on ``target`` (timing cache in the user cache folder)."""
        self._require(target)
        onnx_path = Path(onnx_path)
        return build_engine(onnx_path, build_spec(target, self._precision(onnx_path, target, precision)))

    def time_onnx(self, onnx_path: str | Path, target: Target, protocol: TimingProtocol, precision: str | None = None) -> Timing:
        """Whole-model latency (CUDA events), at ``precision`` (default: int8 for a Q/DQ ONNX, else the target's)."""
        built = self.build(onnx_path, target, precision)
        sess = TrtSession(built.plan, built.spec.dla_core)
        try:
            return sess.time_engine(protocol)
        finally:
            sess.close()

    def profile_layers(
        self,
        onnx_path: str | Path,
        target: Target,
        protocol: TimingProtocol,
        precision: str | None = None,
        layer_of: Mapping[str, str] | None = None,
        known: set[str] | None = None,
    ) -> LayerProfile:
        """Per-layer times of a whole model (``IProfiler``), charged to edgeprune layers, plus the event-timed engine.

        ``layer_of`` overrides ONNX node -> layer names; ``known`` limits the layers
        reported (others' time goes to ``other``); see :func:`edgeprune.trt_config.build_layer_map`.
        """
        built = self.build(onnx_path, target, precision)
        layer_map = build_layer_map(built.engine_info, onnx_path, layer_of, known)
        sess = TrtSession(built.plan, built.spec.dla_core)
        try:
            engine_t = sess.time_engine(protocol)
            runs = sess.profile(protocol)
        finally:
            sess.close()
        layers, engine_layers = summarise_runs(runs, layer_map)
        return LayerProfile(engine_t, layers, engine_layers, layer_map, built.spec.precision, len(runs))

    def time_layer(self, sig: LayerSignature, target: Target, protocol: TimingProtocol) -> Timing:
        """One layer configuration at ``sig.dtype``, timed as a layer inside a model would be (see the module doc)."""
        return self.time_layer_detail(sig, target, protocol)[0]

    def time_layer_detail(self, sig: LayerSignature, target: Target, protocol: TimingProtocol) -> tuple[Timing, dict]:
        """:meth:`time_layer` plus the precision built, how it was timed, and the engine layers (``nodes``) involved."""
        import tempfile

        from edgeprune.profile.layer_onnx import layer_onnx

        self._require(target)
        precision = sig.dtype if sig.dtype in ("fp32", "fp16", "int8") else _default(target)
        model = layer_onnx(sig)
        if precision == "int8":
            model = qdq_layer_model(model)
        how = str(target.options.get("layer_timing", "profiler"))
        meta: dict[str, Any] = {"precision": precision, "layer_timing": how}
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "layer.onnx"
            path.write_bytes(model.SerializeToString())
            if how == "events":
                return self.time_onnx(path, target, protocol, precision), meta
            prof = self.profile_layers(path, target, protocol, precision)
        mine = {k: v for k, v in prof.layers.items() if k != OTHER}
        if len(mine) != 1:
            raise RuntimeError(f"expected the one layer of {sig.key()} in the TensorRT profile, found {sorted(prof.layers)}")
        meta["nodes"] = sorted(n for n, share in prof.layer_map.shares.items() if any(k != OTHER for k in share))
        meta["other_ms"] = prof.layers[OTHER].median if OTHER in prof.layers else 0.0
        meta["engine_ms"] = prof.engine.median
        return next(iter(mine.values())), meta

    def make_runner(self, onnx_path: str | Path, target: Target) -> Callable[[], None]:
        """Run the engine once (enqueue + stream sync) on fixed random inputs: for the profiler's interleaved timing."""
        built = self.build(onnx_path, target)
        sess = TrtSession(built.plan, built.spec.dla_core)

        def run() -> None:
            sess._enqueue(sess.context)
            sess.cuda.sync()

        run.session = sess  # type: ignore[attr-defined]  # keeps the engine and its buffers alive with the runner
        return run

    def run_onnx(self, onnx_path: str | Path, target: Target, x: np.ndarray) -> np.ndarray:
        built = self.build(onnx_path, target)
        sess = TrtSession(built.plan, built.spec.dla_core)
        try:
            return np.concatenate([sess.run(x[i : i + 1]) for i in range(len(x))])
        finally:
            sess.close()


def _default(target: Target) -> str:
    from edgeprune.trt_config import default_precision

    return default_precision(target)


def qdq_layer_model(model: Any, seed: int = 0) -> Any:
    """Symmetric int8 Q/DQ around a layer graph from :func:`~edgeprune.profile.layer_onnx.layer_onnx`.

    Activations (``x`` and the residual input) get per-tensor scales, the
    weight becomes an int8 initializer with per-output-channel scales behind a
    DequantizeLinear: the explicit-quantisation pattern TensorRT fuses into an
    int8 conv/gemm kernel. Scales come from the random weights and a unit
    normal input, which is all latency depends on.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    weighted = next(n for n in g.node if n.op_type in ("Conv", "Gemm"))
    new_inits = []
    new_nodes = []

    def qdq(tensor: str, scale: float) -> str:
        s, z = f"{tensor}_scale", f"{tensor}_zp"
        new_inits.append(numpy_helper.from_array(np.array(scale, dtype=np.float32), s))
        new_inits.append(numpy_helper.from_array(np.array(0, dtype=np.int8), z))
        new_nodes.append(helper.make_node("QuantizeLinear", [tensor, s, z], [f"{tensor}_q"], name=f"{tensor}_QuantizeLinear"))
        new_nodes.append(helper.make_node("DequantizeLinear", [f"{tensor}_q", s, z], [f"{tensor}_dq"], name=f"{tensor}_DequantizeLinear"))
        return f"{tensor}_dq"

    act_scale = 4.0 / 127.0  # |N(0,1)| < 4
    rename: dict[str, str] = {}
    for inp in g.input:
        rename[inp.name] = qdq(inp.name, act_scale)
    w_name = weighted.input[1]
    w = numpy_helper.to_array(inits[w_name])
    axis = 0
    flat = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
    scales = np.maximum(flat, 1e-8).astype(np.float32) / 127.0
    bshape = (-1,) + (1,) * (w.ndim - 1)
    wq = np.clip(np.round(w / scales.reshape(bshape)), -127, 127).astype(np.int8)
    g.initializer.remove(inits[w_name])
    new_inits += [
        numpy_helper.from_array(wq, f"{w_name}_int8"),
        numpy_helper.from_array(scales, f"{w_name}_scale"),
        numpy_helper.from_array(np.zeros(len(scales), dtype=np.int8), f"{w_name}_zp"),
    ]
    new_nodes.append(
        helper.make_node("DequantizeLinear", [f"{w_name}_int8", f"{w_name}_scale", f"{w_name}_zp"], [f"{w_name}_dq"], name=f"{w_name}_DequantizeLinear", axis=axis)
    )
    rename[w_name] = f"{w_name}_dq"
    for n in g.node:
        for i, name in enumerate(n.input):
            if name in rename:
                n.input[i] = rename[name]
    nodes = new_nodes + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    g.initializer.extend(new_inits)
    model.opset_import[0].version = max(model.opset_import[0].version, 13)  # per-axis DequantizeLinear
    onnx.checker.check_model(model)
    return model


BACKENDS.register("trt", "TensorRT engines on an NVIDIA GPU / Jetson (IProfiler per layer)")(TrtBackend())
