"""OpenVINO engine emitter: OpenVINO IR (``model.xml`` + ``model.bin``) or the ONNX file, plus ``manifest.json``.

int8: the QDQ ONNX that ``edgeprune.quant.ort_int8.quantize_onnx`` writes is the
engine's source; OpenVINO's low-precision transformations run its
Quantize/DequantizeLinear pairs as int8 kernels, so nothing OpenVINO-specific
is needed to quantise.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeprune.backends.openvino.options import OpenVinoOptions

if TYPE_CHECKING:
    import torch
    from torch import nn

    from edgeprune.backends.base import Engine
    from edgeprune.config import Target


def save_ir(onnx_path: str | Path, xml_path: str | Path) -> tuple[Path, Path]:
    """Convert an ONNX file to OpenVINO IR (weights kept in their precision, no fp16 compression)."""
    import openvino as ov

    xml_path = Path(xml_path)
    ov.save_model(ov.Core().read_model(str(onnx_path)), str(xml_path), compress_to_fp16=False)
    return xml_path, xml_path.with_suffix(".bin")


def emit_openvino(model: nn.Module, target: Target, out_dir: Path, example: torch.Tensor, options: dict[str, Any]) -> Engine:
    """Export ONNX; quantise to int8 QDQ when ``options['quantize']`` gives the ``quantize_onnx`` arguments
    (e.g. ``{"calib": images}``); write the engine in the target's ``engine_format`` and a manifest."""
    import openvino as ov

    from edgeprune.backends.base import Engine
    from edgeprune.backends.openvino.runtime import compile_config, compile_model
    from edgeprune.compile.onnx_export import export_onnx
    from edgeprune.fileio import write_json

    opts = OpenVinoOptions.from_target(target)
    out_dir = Path(out_dir)
    onnx_path = export_onnx(model, example, out_dir / "model.onnx")
    files: dict[str, Path] = {"onnx": onnx_path}
    source = onnx_path
    quant = options.get("quantize")
    qinfo: dict[str, Any] | None = None
    if quant is not None:
        from edgeprune.quant.ort_int8 import quantize_onnx

        q = quantize_onnx(onnx_path, out_dir / "model.int8.onnx", target, **quant)
        files["onnx_int8"] = source = Path(q.path)
        qinfo = {"format": q.format, "method": q.method, "calib_samples": q.calib_samples, "excluded_nodes": q.excluded_nodes}
    engine = source
    if opts.engine_format == "ir":
        xml, binf = save_ir(source, out_dir / "model.xml")
        files["xml"], files["bin"] = engine, _ = xml, binf
    config = {k: v for k, v in compile_config(target).items() if k != "PERF_COUNT"}
    manifest = {
        "target": target.name,
        "backend": "openvino",
        "engine": engine.name,
        "source_onnx": source.name,
        "precision": "int8" if quant is not None else "fp32",
        "input_shape": list(example[:1].shape),
        "threads": target.threads,
        "device": "CPU",
        "config": config,
        "openvino": ov.__version__,
        "quantization": qinfo,
    }
    files["manifest"] = write_json(out_dir / "manifest.json", manifest)
    request = compile_model(engine, target).create_infer_request()
    return Engine(target, out_dir, files, manifest,
                  lambda x: np.asarray(request.infer({0: np.ascontiguousarray(x, dtype=np.float32)})[0]))
