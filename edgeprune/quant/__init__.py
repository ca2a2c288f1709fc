"""Quantisation: per-layer sensitivity, int8 (ONNX Runtime QDQ) and fp16 engines, mixed precision, QAT.

Everything is imported lazily so ``import edgeprune.quant`` stays light
(onnxruntime and onnx are only imported by the functions that need them)::

    from edgeprune.quant import quantize_onnx, count_precisions, sensitivity
    q = quantize_onnx("model.onnx", "model.int8.onnx", "cpu-ort", calib=x, exclude=["layer1.0.conv1"])
    count_precisions(q.path)          # {"conv1": "int8", "layer1.0.conv1": "fp32", ...}
    sensitivity(model, data.train, kind="hawq")   # {"layer1.0.conv1": 1.3e-4, ...}

See docs/quant.md.
"""
from __future__ import annotations

import importlib
from typing import Any

_API = {
    "quantize_onnx": "edgeprune.quant.ort_int8",
    "QuantResult": "edgeprune.quant.ort_int8",
    "QuantWarning": "edgeprune.quant.names",
    "int8_format": "edgeprune.quant.ort_int8",
    "count_precisions": "edgeprune.quant.precisions",
    "runtime_precisions": "edgeprune.quant.precisions",
    "layer_of_node": "edgeprune.quant.names",
    "UnmatchedLayers": "edgeprune.quant.names",
    "sensitivity": "edgeprune.quant.layer_sensitivity",
    "quantize_weight": "edgeprune.quant.qat",
    "prepare_qat": "edgeprune.quant.qat",
    "calibrate_qat": "edgeprune.quant.qat",
    "convert_scales": "edgeprune.quant.qat",
    "strip_qat": "edgeprune.quant.qat",
    "to_fp16_onnx": "edgeprune.quant.fp16",
}


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'edgeprune.quant' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_API))


__all__ = [
    "QuantResult",
    "QuantWarning",
    "UnmatchedLayers",
    "calibrate_qat",
    "convert_scales",
    "count_precisions",
    "int8_format",
    "layer_of_node",
    "prepare_qat",
    "quantize_onnx",
    "quantize_weight",
    "runtime_precisions",
    "sensitivity",
    "strip_qat",
    "to_fp16_onnx",
]
