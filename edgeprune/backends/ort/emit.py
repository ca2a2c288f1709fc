"""ONNX Runtime emitter: ``model.onnx`` (fp32) or ``model.int8.onnx`` (QDQ) plus ``manifest.json``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeprune.backends.base import Engine
from edgeprune.compile.onnx_export import export_onnx
from edgeprune.config import Target
from edgeprune.fileio import write_json


def emit_ort(model: nn.Module, target: Target, out_dir: Path, example: torch.Tensor, options: dict[str, Any]) -> Engine:
    """Export ONNX; quantise to int8 QDQ when ``options['quantize']`` gives a calibration set."""
    from edgeprune.backends.ort.runtime import make_session

    onnx_path = export_onnx(model, example, out_dir / "model.onnx")
    files = {"onnx": onnx_path}
    engine_path = onnx_path
    quant = options.get("quantize")
    disabled: list[str] = []
    if quant is not None:
        from edgeprune.quant.ort_int8 import quantize_onnx

        q = quantize_onnx(onnx_path, out_dir / "model.int8.onnx", target, **quant)
        files["onnx_int8"] = engine_path = q.path
        disabled = q.disabled_optimizers
    manifest = {
        "target": target.name,
        "backend": "ort",
        "engine": engine_path.name,
        "input_shape": list(example[:1].shape),
        "threads": target.threads,
        "disabled_optimizers": disabled,
    }
    files["manifest"] = write_json(out_dir / "manifest.json", manifest)
    sess = make_session(engine_path, target, disabled_optimizers=disabled)
    name = sess.get_inputs()[0].name
    return Engine(target, out_dir, files, manifest, lambda x: sess.run(None, {name: x.astype("float32")})[0])
