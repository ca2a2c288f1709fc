"""ONNX Runtime CPU backend (``cpu-ort``): sessions, layer and engine timing, verification runs."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeprune.backends.base import Backend, Engine
from edgeprune.backends.ort.options import OrtOptions

if TYPE_CHECKING:
    from torch import nn

    from edgeprune.config import Target
    from edgeprune.graph.signature import LayerSignature
    from edgeprune.profile.timing import Timing, TimingProtocol


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


def make_session(onnx_path: str | Path, target: Target, profiling: bool = False, disabled_optimizers: Sequence[str] | None = None) -> Any:
    """An ORT CPU inference session for ``onnx_path``."""
    import onnxruntime as ort

    return ort.InferenceSession(
        str(onnx_path),
        sess_options=session_options(target, profiling),
        providers=["CPUExecutionProvider"],
        disabled_optimizers=list(disabled_optimizers or []),
    )


def random_feeds(session: Any, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs of the session's (static) input shapes and types (float32/float16, else int64), batch 1 where dynamic."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp in session.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in inp.shape]
        dtype = np.float16 if inp.type == "tensor(float16)" else np.float32 if "float" in inp.type else np.int64
        feeds[inp.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


class OrtBackend(Backend):
    """ONNX Runtime, CPU execution provider, threads from the target file."""

    name = "ort"
    unit = "ms"
    options_schema = OrtOptions
    packages = ("onnxruntime",)
    int8_model_term = True
    qdq_int8 = True
    description = "ONNX Runtime CPU execution provider"

    def availability(self, target: Target) -> tuple[bool, str]:
        try:
            import onnxruntime  # noqa: F401
        except ImportError as err:
            return False, f"unavailable: onnxruntime not installed ({err})"
        if target.is_remote:
            return False, "unavailable: the ort backend runs locally only (use a tvm target for RPC boards)"
        return True, ""

    def precision_support(self, precision: str) -> tuple[bool, str]:
        """fp32 always; int8 when :mod:`edgeprune.quant.ort_int8` can build QDQ layers; nothing else."""
        if precision == "int8":
            return int8_available()
        if precision != "fp32":
            return False, "the ort CPU backend times fp32 and int8 only"
        return True, ""

    def time_onnx(self, onnx_path: str | Path, target: Target, protocol: TimingProtocol,
                  disabled_optimizers: Sequence[str] = ()) -> Timing:
        """Time a whole model in an ORT session (honouring the optimisers an int8 QDQ engine disables)."""
        from edgeprune.profile.timing import measure

        sess = make_session(onnx_path, target, disabled_optimizers=disabled_optimizers)
        feeds = random_feeds(sess)
        return measure(lambda: sess.run(None, feeds), protocol)

    def make_runner(self, onnx_path: str | Path, target: Target, disabled_optimizers: Sequence[str] = ()) -> Any:
        """One ORT session on fixed random inputs, run once per call."""
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
        from edgeprune.profile.timing import measure

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
        """Run the model once on ``x`` in an ORT session."""
        from edgeprune.data.batch import feeds_for

        sess = make_session(onnx_path, target)
        return sess.run(None, feeds_for([i.name for i in sess.get_inputs()], x))[0]

    def emit(self, model: nn.Module, target: Target, out_dir: Path, example: Any, options: dict[str, Any]) -> Engine:
        """ONNX (+ int8 QDQ when ``options['quantize']`` gives a calibration set); see :mod:`.emit`."""
        from edgeprune.backends.ort.emit import emit_ort

        return emit_ort(model, target, out_dir, example, options)

    def compile_options(self, calib: Any, int8: bool, exclude: Sequence[str] = ()) -> dict[str, Any]:
        """``--int8`` quantises to QDQ, calibrated on ``calib``; ``exclude`` stays fp32."""
        if not int8:
            return {}
        from edgeprune.data.batch import calibration_arrays

        return {"quantize": {"calib": calibration_arrays(calib), "exclude": list(exclude)}}

    def verify_threshold(self, quantized: bool) -> float:
        """fp32 engines must agree with PyTorch on 99% of images; int8 ones on 90%."""
        return 90.0 if quantized else 99.0


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

