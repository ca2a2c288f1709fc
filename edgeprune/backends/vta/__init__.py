"""The VTA accelerator, simulated: ``runtime`` (layer cycles), ``emit`` (instruction stream + weights), ``options``.

The simulator itself is :mod:`edgeprune.vta`; this package is only the backend glue.
"""
from __future__ import annotations

from edgeprune.backends import BACKENDS
from edgeprune.backends.vta.runtime import VtaBackend

BACKENDS.register("vta", VtaBackend.description)(VtaBackend())
