"""The ``[options]`` a ``backend = "trt"`` target may set (types and ranges are checked by ``config.check_trt_options``)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrtOptions:
    """Known keys of a trt target's ``[options]`` table; see :mod:`edgeprune.backends.trt.config` for what each does."""

    precision: str | None = None  # default build precision; None = fp32 if listed, else the first
    workspace_mib: int = 1024
    timing_cache: str | None = None
    dla_core: int | None = None
    gpu_fallback: bool = True
    int8_fp16_fallback: bool = True
    tf32: bool = True
    builder_optimization_level: int | None = None
    layer_timing: str = "profiler"  # profiler | events
    # int8 QDQ format (edgeprune.quant.ort_int8) and informational kernel facts
    int8_channel_multiple: int = 32
    int8_activation: str = "QInt8"
    int8_weight: str = "QInt8"
    int8_symmetric: bool = True
    reduce_range: bool = False
    per_channel: bool = True
