"""ORT sessions on the CUDA execution provider, and runs with IO binding (no host<->device copy is timed).

Every function takes ``provider``: ``"cuda"`` (the product) or ``"cpu"`` (the same code path on
ORT's CPU provider, so tests on machines without a GPU exercise it).
"""
from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeprune.backends.ort.runtime import random_feeds, session_options
from edgeprune.backends.ort_cuda.options import OrtCudaOptions

if TYPE_CHECKING:
    from edgeprune.config import Target

CUDA_EP = "CUDAExecutionProvider"
UNAVAILABLE = f"needs onnxruntime-gpu and an NVIDIA GPU: {CUDA_EP} not in onnxruntime.get_available_providers()"
PROVIDERS = ("cuda", "cpu")


def cuda_available() -> tuple[bool, str]:
    """(True, "") when ORT here has the CUDA execution provider, else (False, the one-line reason)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return False, UNAVAILABLE
    return (True, "") if CUDA_EP in ort.get_available_providers() else (False, UNAVAILABLE)


def cuda_provider_options(target: Target) -> dict[str, str]:
    """The CUDA provider's options from the target (device, cuDNN algorithm search, TF32, copies on the compute stream)."""
    opts = OrtCudaOptions.from_target(target)
    return {
        "device_id": str(opts.device_id),
        "cudnn_conv_algo_search": opts.cudnn_conv_algo_search,
        "use_tf32": "1" if opts.use_tf32 else "0",
        # copies on the default stream: a bound run's inputs are ready before its first kernel
        "do_copy_in_default_stream": "1",
    }


def providers(target: Target, provider: str = "cuda") -> list[Any]:
    """ORT's ``providers=`` list: CUDA with its options, CPU behind it for the odd op CUDA lacks; or CPU only."""
    if provider not in PROVIDERS:
        raise ValueError(f"provider must be one of {PROVIDERS}, got {provider!r}")
    if provider == "cpu":
        return ["CPUExecutionProvider"]
    return [(CUDA_EP, cuda_provider_options(target)), "CPUExecutionProvider"]


def device_of(target: Target, provider: str = "cuda") -> tuple[str, int]:
    """The (device type, id) that IO binding places inputs and outputs on."""
    return ("cuda", OrtCudaOptions.from_target(target).device_id) if provider == "cuda" else ("cpu", 0)


def make_session(onnx_path: str | Path, target: Target, profiling: bool = False, provider: str = "cuda",
                 disabled_optimizers: Sequence[str] = (), profile_prefix: str | None = None) -> Any:
    """An ORT session on ``provider`` with the target's session options (those of the CPU backend, shared)."""
    import onnxruntime as ort

    so = session_options(target, profiling)
    if profiling:
        so.profile_file_prefix = profile_prefix or str(Path(tempfile.gettempdir()) / "edgeprune_ort_cuda")
    return ort.InferenceSession(str(onnx_path), sess_options=so, providers=providers(target, provider),
                                disabled_optimizers=list(disabled_optimizers))


class BoundRun:
    """A session run with IO binding: fixed random inputs copied to the device once, outputs left on the device.

    ``run_with_iobinding`` synchronises the provider's stream at the end of a run (ORT's default), so the wall
    time of a call is the GPU work plus the launch cost, without host<->device copies.
    """

    def __init__(self, session: Any, target: Target, provider: str = "cuda", seed: int = 0) -> None:
        import onnxruntime as ort

        self.session = session
        kind, dev = device_of(target, provider)
        self.binding = session.io_binding()
        self._inputs = []  # the device copies must outlive the binding
        for name, arr in random_feeds(session, seed).items():
            value = ort.OrtValue.ortvalue_from_numpy(arr, kind, dev)
            self._inputs.append(value)
            self.binding.bind_ortvalue_input(name, value)
        for out in session.get_outputs():
            self.binding.bind_output(out.name, kind, dev)

    def __call__(self) -> None:
        self.session.run_with_iobinding(self.binding)


def run_numpy(session: Any, x: Any) -> np.ndarray:
    """The session's first output on host inputs ``x`` (verification: copies are fine here)."""
    from edgeprune.data.batch import feeds_for

    return session.run(None, feeds_for([i.name for i in session.get_inputs()], x))[0]
