"""The headline benchmark's non-edgeprune peers (issue 25): NNCF int8 post-training quantisation, NVIDIA ModelOpt.

Kept out of ``benchmarks/headline.py`` so that the peers' own APIs sit in one place:

* NNCF (``nncf.quantize``, its ONNX backend) quantises the exported fp32 ONNX model to a QDQ model that ONNX
  Runtime runs with int8 kernels, calibrated on the images edgeprune calibrates on. NNCF's ``nncf.prune`` is
  unstructured magnitude masking (``nncf/torch/function_hook/pruning``): it cannot cut latency on a dense
  runtime, so NNCF's peer rows are its PTQ, of the dense model and of Torch-Pruning's pruned models.
* NVIDIA ModelOpt FastNAS: :func:`modelopt_reason` says in one line why it does not run here (the benchmark
  writes that reason as the row) or returns "" when it imports.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


def nncf_version() -> str:
    """The installed NNCF version, or "" when NNCF does not import."""
    try:
        import nncf
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return ""
    return str(getattr(nncf, "__version__", "?"))


def nncf_reason() -> str:
    """Why the NNCF rows cannot run here in one line, or "" when ``nncf.quantize`` and its ONNX backend import."""
    try:
        import nncf  # noqa: F401
        import onnx  # noqa: F401
    except Exception as err:  # noqa: BLE001 - the reason is the row
        return f"NNCF does not import here: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return ""


def nncf_method(version: str, per_tensor_activations: bool = False) -> str:
    """How an NNCF int8 row was quantised (written into the row's method)."""
    how = "default preset, per-tensor activations" if per_tensor_activations else "default preset"
    return f"NNCF {version} post-training quantisation (nncf.quantize, ONNX backend, {how}, int8 QDQ run by ONNX Runtime)"


def nncf_quantize_file(fp32_onnx: Path, out: Path, calib: torch.Tensor | np.ndarray,
                       per_tensor_activations: bool = False) -> Path:
    """``fp32_onnx`` quantised by ``nncf.quantize`` (ONNX backend) to ``out``, calibrated on every image of ``calib``.

    ``calib`` is an NCHW batch (the images edgeprune calibrates its own int8 engines on); each image is
    one calibration sample, at batch 1 as the engines run. NNCF's defaults target OpenVINO: the input of a
    depthwise conv gets a *per-channel* QuantizeLinear, which ONNX Runtime's CPU provider cannot fuse into
    QLinearConv, so those convs run in float with their weights dequantised on every run (MobileNetV2 at
    64 px: 39 of 52 convs, 4.5-5x slower than fp32). ``per_tensor_activations`` asks NNCF for per-tensor
    activation scales, the form ONNX Runtime fuses.
    """
    import logging

    import nncf
    import onnx

    logging.getLogger("nncf").setLevel(logging.ERROR)
    model = onnx.load(str(fp32_onnx))
    name = model.graph.input[0].name
    arr = calib.numpy() if isinstance(calib, torch.Tensor) else np.asarray(calib)
    samples = [arr[i:i + 1].astype(np.float32) for i in range(len(arr))]
    dataset = nncf.Dataset(samples, lambda x: {name: x})
    kw: dict[str, Any] = {}
    if per_tensor_activations:
        from nncf.quantization.advanced_parameters import (
            AdvancedQuantizationParameters,
            QuantizationParameters,
        )

        kw["advanced_parameters"] = AdvancedQuantizationParameters(
            activations_quantization_params=QuantizationParameters(per_channel=False))
    q = nncf.quantize(model, dataset, subset_size=len(samples), **kw)
    out = Path(out)
    tmp = out.with_suffix(".tmp.onnx")
    onnx.save(q, str(tmp))
    os.replace(tmp, out)
    return out


def nncf_engine(model: nn.Module, tgt: Any, directory: Path, example: torch.Tensor, calib: torch.Tensor,
                per_tensor_activations: bool = False) -> Any:
    """The fp32 engine ``edgeprune compile`` emits, with its ONNX model quantised by NNCF
    (:func:`nncf_quantize_file`): an
    :class:`edgeprune.backends.Engine` whose ``onnx_engine()`` is the NNCF QDQ file (runs and times like any other)."""
    from edgeprune.backends.base import Engine
    from edgeprune.backends.ort.runtime import make_session
    from edgeprune.compile import compile as emit
    from edgeprune.data.batch import feeds_for

    fp32 = emit(model, tgt, directory, example)
    q = nncf_quantize_file(fp32.files["onnx"], Path(directory) / "model.nncf-int8.onnx", calib, per_tensor_activations)
    sess = make_session(q, tgt)
    names = [i.name for i in sess.get_inputs()]
    manifest = {**fp32.manifest, "engine": q.name, "quantizer": f"nncf {nncf_version()}", "disabled_optimizers": []}
    return Engine(tgt, Path(directory), {**fp32.files, "onnx_int8": q}, manifest,
                  lambda x: sess.run(None, feeds_for(names, x))[0])


MODELOPT_METHOD = "NVIDIA ModelOpt FastNAS (channel search under a FLOPs constraint)"


def modelopt_reason(site: str | None = None) -> str:
    """Why NVIDIA ModelOpt FastNAS cannot run in this benchmark, in one line ("" if it imports).

    ``site``: an extra folder put on ``sys.path`` first (``pip install --target DIR nvidia-modelopt``: it is
    not a dependency of edgeprune and is not in the project's venv).
    """
    if site:
        sys.path.insert(0, str(site))
    try:
        import modelopt.torch.nas
        import modelopt.torch.prune  # noqa: F401
    except Exception as err:  # noqa: BLE001 - the reason is the row
        msg = str(err).splitlines()[0] if str(err) else ""
        where = f" (from {site})" if site else " (not installed in this venv; --modelopt-site DIR adds a pip --target install)"
        return f"nvidia-modelopt does not import{where}: {type(err).__name__}: {msg}"
    finally:
        if site and sys.path and sys.path[0] == str(site):
            sys.path.pop(0)
    return ("nvidia-modelopt imports, but this benchmark has no FastNAS driver yet (mtn.prune(mode='fastnas') needs "
            "a score loop and a subnet search of its own); not run")
