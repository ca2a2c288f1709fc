"""ONNX Runtime CPU backend (``cpu-ort``)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeprune.profile.backends import BACKENDS, Backend
from edgeprune.profile.timing import Timing, TimingProtocol, measure

if TYPE_CHECKING:
    from edgeprune.config import Target


def session_options(target: "Target", profiling: bool = False) -> Any:
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


def make_session(onnx_path: str | Path, target: "Target", profiling: bool = False, disabled_optimizers: list[str] | None = None) -> Any:
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

    def availability(self, target: "Target") -> tuple[bool, str]:
        try:
            import onnxruntime  # noqa: F401
        except ImportError as err:
            return False, f"unavailable: onnxruntime not installed ({err})"
        if target.is_remote:
            return False, "unavailable: the ort backend runs locally only (use a tvm target for RPC boards)"
        return True, ""

    def time_onnx(self, onnx_path: str | Path, target: "Target", protocol: TimingProtocol) -> Timing:
        sess = make_session(onnx_path, target)
        feeds = random_feeds(sess)
        return measure(lambda: sess.run(None, feeds), protocol)

    def run_onnx(self, onnx_path: str | Path, target: "Target", x: np.ndarray) -> np.ndarray:
        sess = make_session(onnx_path, target)
        name = sess.get_inputs()[0].name
        return sess.run(None, {name: x.astype(np.float32)})[0]


BACKENDS.register("ort", "ONNX Runtime CPU execution provider")(OrtBackend())
