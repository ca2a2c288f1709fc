"""ONNX Runtime CUDA emitter: ``model.onnx`` (fp32) or ``model.onnx`` + ``model.fp16.onnx`` (the engine), and
``manifest.json`` (written last, atomically). ``Engine.files["onnx"]`` is the engine file; ``"onnx_fp32"`` the
fp32 export it was converted from.

Options: ``precision`` (``fp32`` / ``fp16``; default the target's ``options.precision``, or what a plan asks
through :meth:`OrtCudaBackend.plan_options`). ``quantize`` (``--int8``) is refused: no int8 here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from edgeprune.backends.base import Engine
from edgeprune.config import Target
from edgeprune.errors import BadInput
from edgeprune.fileio import write_json


def emit_ort_cuda(model: nn.Module, target: Target, out_dir: Path, example: Any, options: dict[str, Any],
                  provider: str = "cuda") -> Engine:
    """Export ONNX, convert to fp16 when asked, write the manifest, and return an engine that runs on ``provider``."""
    from edgeprune.backends.ort_cuda.options import ENGINE_PRECISIONS, OrtCudaOptions
    from edgeprune.backends.ort_cuda.session import cuda_provider_options, make_session, run_numpy
    from edgeprune.compile.onnx_export import export_onnx
    from edgeprune.data.batch import input_names, tensors_of

    if options.get("quantize") is not None:
        raise BadInput(f"target {target.name}: --int8 does not apply (the ort_cuda backend emits fp32 and fp16)")
    precision = options.get("precision") or OrtCudaOptions.from_target(target).precision
    if precision not in ENGINE_PRECISIONS:
        raise BadInput(f"target {target.name}: engine precision must be one of {', '.join(ENGINE_PRECISIONS)}, got {precision!r}")
    fp32 = export_onnx(model, example, out_dir / "model.onnx")
    files: dict[str, Path] = {"onnx": fp32}
    engine_path = fp32
    if precision == "fp16":
        from edgeprune.quant.fp16 import to_fp16_onnx

        engine_path = to_fp16_onnx(fp32, out_dir / "model.fp16.onnx")
        files = {"onnx_fp32": fp32, "onnx": engine_path}
    manifest = {
        "target": target.name,
        "backend": "ort_cuda",
        "engine": engine_path.name,
        "precision": precision,
        "provider": "CUDAExecutionProvider" if provider == "cuda" else "CPUExecutionProvider",
        "provider_options": cuda_provider_options(target),
        "input_shape": list(tensors_of(example)[0][:1].shape),
        "input_shapes": {n: list(t[:1].shape) for n, t in zip(input_names(example), tensors_of(example))},
        "io": "float32 (fp16 engines cast inside)",
    }
    files["manifest"] = write_json(out_dir / "manifest.json", manifest)
    sess = make_session(engine_path, target, provider=provider)
    return Engine(target, out_dir, files, manifest, lambda x: run_numpy(sess, x))
