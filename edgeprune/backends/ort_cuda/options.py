"""The ``[options]`` a ``backend = "ort_cuda"`` target may set (unknown keys and bad values: one-line BadInput)."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from edgeprune.errors import BadInput

#: cuDNN convolution algorithm search of the CUDA provider: EXHAUSTIVE benchmarks every algorithm once per shape
#: (slow first run, fastest kernels: what a deployed engine gets), HEURISTIC asks cuDNN's heuristics (fast start,
#: sometimes slower kernels), DEFAULT takes cuDNN's default algorithm (no search)
CONV_ALGO_SEARCH = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")
LAYER_TIMINGS = ("auto", "wall")
ENGINE_PRECISIONS = ("fp32", "fp16")
OPT_LEVELS = ("disable", "basic", "extended", "all")


@dataclass(frozen=True)
class OrtCudaOptions:
    """Known keys of an ort_cuda target's ``[options]`` table (defaults as the code applies them).

    - ``device_id``: the CUDA device (``CUDA_VISIBLE_DEVICES`` numbering);
    - ``cudnn_conv_algo_search``: see :data:`CONV_ALGO_SEARCH`;
    - ``use_tf32``: let fp32 convolutions and GEMMs use TF32 tensor cores (Ampere+). Off by default so an fp32
      engine computes in fp32;
    - ``graph_optimization_level``: ORT's graph optimisations (``disable|basic|extended|all``);
    - ``layer_timing``: ``auto`` = the GPU kernels' own durations from ORT's profiler (``"cat": "Kernel"`` events,
      present when ORT was built with ``--enable_cuda_profiling``), else the wall time of an IO-bound,
      stream-synchronised run of the layer graph; ``wall`` = always the latter;
    - ``precision``: the engine precision ``compile`` emits when no plan says otherwise (``fp32`` / ``fp16``).
    """

    device_id: int = 0
    cudnn_conv_algo_search: str = "EXHAUSTIVE"
    use_tf32: bool = False
    graph_optimization_level: str = "all"
    layer_timing: str = "auto"
    precision: str = "fp32"

    @classmethod
    def from_target(cls, target: Any) -> OrtCudaOptions:
        """Read and check ``target.options`` (one-line :class:`BadInput` on an unknown key or a bad value)."""
        raw = dict(getattr(target, "options", {}) or {})
        name = getattr(target, "name", "?")
        known = [f.name for f in fields(cls)]
        for key in raw:
            if key not in known:
                raise BadInput(f"target {name}: unknown option {key!r} for backend ort_cuda (known: {', '.join(known)})")
        opts = cls(**raw)
        for key, allowed in (("cudnn_conv_algo_search", CONV_ALGO_SEARCH), ("layer_timing", LAYER_TIMINGS),
                             ("precision", ENGINE_PRECISIONS), ("graph_optimization_level", OPT_LEVELS)):
            if getattr(opts, key) not in allowed:
                raise BadInput(f"target {name}: option {key} must be one of {', '.join(allowed)}, got {getattr(opts, key)!r}")
        if isinstance(opts.device_id, bool) or not isinstance(opts.device_id, int) or opts.device_id < 0:
            raise BadInput(f"target {name}: option device_id must be an integer >= 0, got {opts.device_id!r}")
        if not isinstance(opts.use_tf32, bool):
            raise BadInput(f"target {name}: option use_tf32 must be true or false")
        return opts
