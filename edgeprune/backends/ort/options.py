"""The ``[options]`` a ``backend = "ort"`` target may set."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OrtOptions:
    """Known keys of an ort target's ``[options]`` table (defaults as the code applies them)."""

    graph_optimization_level: str = "all"  # disable | basic | extended | all
    int8_activation: str = "QUInt8"  # QDQ activation type (edgeprune.quant.ort_int8)
    int8_weight: str = "QInt8"  # QDQ weight type
    reduce_range: bool = False  # 7-bit weights (avoids VPMADDUBSW saturation without VNNI)
