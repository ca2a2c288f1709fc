"""ONNX Runtime CPU backend (``cpu-ort``)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeprune.profile.backends import BACKENDS, Backend
from edgeprune.profile.timing import Timing, TimingProtocol, measure

if TYPE_CHECKING:
    from edgeprune.config import Target
    from edgeprune.graph.signature import LayerSignature


def session_options(target: Target, profiling: bool = False) -> Any:
    """ORT session options from the target file (threads, optimisation level)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = target.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    level = str(target.options.get("graph_optimization_level", "all")).lower()
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }.get(level, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    so.log_severity_level = 3
    so.enable_profiling = profiling
    return so


def make_session(onnx_path: str | Path, target: Target, profiling: bool = False, disabled_optimizers: list[str] | None = None) -> Any:
    """An ORT CPU inference session for ``onnx_path``."""
    import onnxruntime as ort

    return ort.InferenceSession(
        str(onnx_path),
        sess_options=session_options(target, profiling),
        providers=["CPUExecutionProvider"],
        disabled_optimizers=disabled_optimizers or [],
    )


def random_feeds(session: Any, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs of the session's (static) input shapes, batch 1 where dynamic."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp in session.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in inp.shape]
        dtype = np.float32 if "float" in inp.type else np.int64
        feeds[inp.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


class OrtBackend(Backend):
    """ONNX Runtime, CPU execution provider, threads from the target file."""

    name = "ort"
    unit = "ms"

    def availability(self, target: Target) -> tuple[bool, str]:
        try:
            import onnxruntime  # noqa: F401
        except ImportError as err:
            return False, f"unavailable: onnxruntime not installed ({err})"
        if target.is_remote:
            return False, "unavailable: the ort backend runs locally only (use a tvm target for RPC boards)"
        return True, ""

    def time_onnx(self, onnx_path: str | Path, target: Target, protocol: TimingProtocol) -> Timing:
        sess = make_session(onnx_path, target)
        feeds = random_feeds(sess)
        return measure(lambda: sess.run(None, feeds), protocol)

    def make_runner(self, onnx_path: str | Path, target: Target, disabled_optimizers: list[str] | None = None) -> Any:
        sess = make_session(onnx_path, target, disabled_optimizers=disabled_optimizers)
        feeds = random_feeds(sess)
        return lambda: sess.run(None, feeds)

    def time_layer(self, sig: LayerSignature, target: Target, protocol: TimingProtocol) -> Timing:
        return self.time_layer_detail(sig, target, protocol)[0]

    def time_layer_detail(self, sig: LayerSignature, target: Target, protocol: TimingProtocol) -> tuple[Timing, dict]:
        """Time one layer graph (fp32, or int8 QDQ via ``edgeprune.quant.ort_int8``) and say which layout ORT chose.

        The layout comes from ORT's own optimised graph: ``nchwc`` when the conv
        became a ``com.microsoft.nchwc`` Conv (ORT's blocked fast path), else ``plain``.
        """
        import tempfile

        import onnx

        from edgeprune.profile.layer_onnx import layer_onnx

        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "layer.onnx"
            path.write_bytes(layer_onnx(sig.with_channels(sig.in_channels, sig.out_channels, "fp32")).SerializeToString())
            disabled: list[str] = []
            if sig.dtype == "int8":
                path, disabled = _quantize_layer(Path(d), sig, target)
            elif sig.dtype != "fp32":
                raise NotImplementedError(f"the ort backend does not time {sig.dtype} layers yet")
            import onnxruntime as ort

            so = session_options(target)
            opt_path = Path(d) / "optimized.onnx"
            so.optimized_model_filepath = str(opt_path)
            sess = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"], disabled_optimizers=disabled)
            feeds = random_feeds(sess)
            timing = measure(lambda: sess.run(None, feeds), protocol)
            meta: dict = {}
            try:
                nodes = onnx.load(str(opt_path), load_external_data=False).graph.node
                meta["layout"] = "nchwc" if any(n.domain == "com.microsoft.nchwc" and n.op_type == "Conv" for n in nodes) else "plain"
                meta["nodes"] = len(nodes)
            except Exception:  # noqa: BLE001 - the optimised dump is a diagnostic only
                meta["layout"] = None
            return timing, meta

    def run_onnx(self, onnx_path: str | Path, target: Target, x: np.ndarray) -> np.ndarray:
        sess = make_session(onnx_path, target)
        name = sess.get_inputs()[0].name
        return sess.run(None, {name: x.astype(np.float32)})[0]


def int8_available() -> tuple[bool, str]:
    """Whether int8 layer variants can be built here (``edgeprune.quant.ort_int8.quantize_onnx``)."""
    try:
        from edgeprune.quant.ort_int8 import quantize_onnx  # noqa: F401
    except ImportError as err:
        return False, f"int8 layers need edgeprune.quant.ort_int8.quantize_onnx ({err})"
    return True, ""


def _quantize_layer(d: Path, sig: LayerSignature, target: Target) -> tuple[Path, list[str]]:
    """QDQ int8 variant of a layer graph, calibrated on random data (enough for timing)."""
    import warnings

    from edgeprune.profile.layer_onnx import layer_onnx
    from edgeprune.quant.ort_int8 import quantize_onnx

    fp32 = d / "layer.single.onnx"
    fp32.write_bytes(layer_onnx(sig.with_channels(sig.in_channels, sig.out_channels, "fp32"), residual_input=False).SerializeToString())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = quantize_onnx(fp32, d / "layer.int8.onnx", target, calib=None)
    return Path(res.path), list(getattr(res, "disabled_optimizers", []) or [])


BACKENDS.register("ort", "ONNX Runtime CPU execution provider")(OrtBackend())
