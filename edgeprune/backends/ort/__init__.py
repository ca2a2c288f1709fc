"""ONNX Runtime on the host CPU: ``runtime`` (sessions, timing), ``emit`` (ONNX / int8 QDQ engines), ``options``."""
from __future__ import annotations

from edgeprune.backends import BACKENDS
from edgeprune.backends.ort.runtime import OrtBackend

BACKENDS.register("ort", OrtBackend.description)(OrtBackend())
