"""TensorRT emitter: ``model.onnx`` (+ ``model.int8.onnx``) -> ``model.plan``, ``model.layers.json``, ``manifest.json``.

Options (``edgeprune.compile(model, target, out, example, **options)``):

- ``precision``: ``fp32`` / ``fp16`` / ``int8`` (default: the target's
  ``options.precision``; ``int8`` when ``quantize`` is given);
- ``quantize``: keyword arguments for
  :func:`edgeprune.quant.ort_int8.quantize_onnx` (``calib``, ``exclude``); int8
  engines are built from that explicit Q/DQ ONNX, never with a calibrator;
- ``qdq_onnx``: an already quantised (symmetric int8 Q/DQ) ONNX to build instead.

The builder settings come from the target (:func:`edgeprune.backends.trt.config.build_spec`);
the timing cache is ``options.timing_cache`` of the target, else
``<out>/<target>.timing.cache``, loaded before and saved (atomically) after each
build, so rebuilding a pruned variant re-times only the kernels it does not share.
Every file is written atomically and the manifest last, so a manifest on disk
always describes complete files.

Where ``tensorrt`` or a GPU is missing (a workstation), the ONNX files and a
manifest with ``"engine": null`` and the equivalent ``trtexec`` command are
still written, then :class:`~edgeprune.errors.BackendUnavailable` says so:
copy the folder to the board and build there (docs/trt.md).
"""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeprune.backends.base import Engine
from edgeprune.backends.trt.config import build_spec, check_qdq_for_tensorrt
from edgeprune.compile.onnx_export import export_onnx
from edgeprune.config import Target
from edgeprune.errors import BackendUnavailable, BadInput
from edgeprune.fileio import write_bytes, write_json, write_text


def _precision(target: Target, options: dict[str, Any]) -> str | None:
    prec = options.get("precision")
    if prec is None and (options.get("quantize") is not None or options.get("qdq_onnx")):
        prec = "int8"
    return prec


def emit_trt(model: nn.Module, target: Target, out_dir: Path, example: torch.Tensor, options: dict[str, Any]) -> Engine:
    """Export ONNX, quantise when asked, build the engine with the target's builder settings, write a manifest."""
    from edgeprune.backends.trt.runtime import TrtSession, build_engine

    spec = build_spec(target, _precision(target, options), engine_dir=out_dir)
    onnx_path = export_onnx(model, example, out_dir / "model.onnx")
    files: dict[str, Path] = {"onnx": onnx_path}
    build_from = onnx_path
    if spec.precision == "int8":
        if options.get("qdq_onnx"):
            build_from = out_dir / "model.int8.onnx"
            src = Path(options["qdq_onnx"])
            if src.resolve() != build_from.resolve():
                write_bytes(build_from, src.read_bytes())
        elif options.get("quantize") is not None:
            from edgeprune.quant.ort_int8 import quantize_onnx

            build_from = Path(quantize_onnx(onnx_path, out_dir / "model.int8.onnx", target, **options["quantize"]).path)
        else:
            raise BadInput("an int8 TensorRT engine needs calibration data (quantize={'calib': ...}) or a Q/DQ ONNX (qdq_onnx=...)")
        problems = check_qdq_for_tensorrt(build_from)
        if problems:
            raise BadInput(f"{build_from.name} cannot become an int8 TensorRT engine: {problems[0]} (quantise with symmetric QInt8 activations and weights, as the target's options ask)")
        files["onnx_int8"] = build_from
    plan_path = out_dir / "model.plan"
    manifest: dict[str, Any] = {
        "target": target.name,
        "backend": "trt",
        "engine": plan_path.name,
        "onnx": build_from.name,
        "precision": spec.precision,
        "input_shape": list(example[:1].shape),
        "build": spec.to_dict(),
        "trtexec": shlex.join(spec.trtexec_args(build_from.name, plan_path.name)),
    }
    try:
        built = build_engine(build_from, spec)
    except BackendUnavailable as err:
        manifest["engine"] = None
        manifest["unavailable"] = str(err)
        files["manifest"] = write_json(out_dir / "manifest.json", manifest)
        raise BackendUnavailable(
            f"{err}; wrote {build_from.name} and manifest.json to {out_dir}: build on the device with "
            f"`edgeprune compile --target {target.name}` or `{manifest['trtexec']}`"
        ) from None
    files["plan"] = write_bytes(plan_path, built.plan)
    files["layers"] = write_text(out_dir / "model.layers.json", built.engine_info)
    if spec.timing_cache is not None and spec.timing_cache.is_file():
        files["timing_cache"] = spec.timing_cache
    manifest.update({
        "layers": "model.layers.json",
        "tensorrt": built.trt_version,
        "device": built.device,
        "build_seconds": round(built.build_seconds, 3),
        "timing_cache_reused": built.timing_cache_reused,
    })
    files["manifest"] = write_json(out_dir / "manifest.json", manifest)
    sess = TrtSession(built.plan, spec.dla_core)
    return Engine(target, out_dir, files, manifest, sess.run)
