"""OpenVINO on the host CPU (``cpu-openvino``): ``backend`` (the object), ``runtime`` (compile, run, time,
performance counters), ``counters`` (node -> layer mapping), ``emit`` (IR / ONNX engines), ``options``.

Light on purpose: registering imports no ``openvino``; install it with ``pip install edgeprune[openvino]``.
"""
from __future__ import annotations

from edgeprune.backends import BACKENDS
from edgeprune.backends.openvino.backend import OpenVinoBackend

BACKENDS.register("openvino", OpenVinoBackend.description)(OpenVinoBackend())
