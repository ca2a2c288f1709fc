"""ONNX Runtime's CUDA execution provider on a local NVIDIA GPU (``gpu-ort-cuda``): ``options`` (the target's
``[options]``), ``session`` (provider list, IO-bound runs), ``events`` (ORT profiler JSON -> layers), ``backend``
(the object), ``emit`` (fp32 / fp16 ONNX engines).

Light on purpose: registering imports no ``onnxruntime``. The CUDA provider comes with ``onnxruntime-gpu``, which
replaces the CPU ``onnxruntime`` package (install it in its own venv; docs/gpu.md).
"""
from __future__ import annotations

from edgeprune.backends import BACKENDS
from edgeprune.backends.ort_cuda.backend import OrtCudaBackend

BACKENDS.register("ort_cuda", OrtCudaBackend.description)(OrtCudaBackend())
