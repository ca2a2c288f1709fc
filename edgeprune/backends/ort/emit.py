"""ONNX Runtime emitter: ``model.onnx`` (fp32) or ``model.int8.onnx`` (QDQ) plus ``manifest.json``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeprune.backends.base import Engine
from edgeprune.compile.onnx_export import export_onnx
from edgeprune.config import Target
from edgeprune.data.batch import feeds_for, input_names, tensors_of
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
        "input_shape": list(tensors_of(example)[0][:1].shape),
        "input_shapes": {n: list(t[:1].shape) for n, t in zip(input_names(example), tensors_of(example))},
        "threads": target.threads,
        "disabled_optimizers": disabled,
    }
    files["manifest"] = write_json(out_dir / "manifest.json", manifest)
    sess = make_session(engine_path, target, disabled_optimizers=disabled)
    names = [i.name for i in sess.get_inputs()]
    single = len(sess.get_outputs()) == 1
    return Engine(target, out_dir, files, manifest,
                  lambda x: sess.run(None, feeds_for(names, x))[0] if single else sess.run(None, feeds_for(names, x)))
