"""TensorRT on an NVIDIA GPU / Jetson: ``runtime`` (build, IProfiler timing), ``emit`` (plan files),
``config`` (builder settings and layer-name mapping, pure Python), ``options``."""
from __future__ import annotations

from edgeprune.backends import BACKENDS
from edgeprune.backends.trt.runtime import TrtBackend

BACKENDS.register("trt", TrtBackend.description)(TrtBackend())
