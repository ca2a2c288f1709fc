"""Backends as plug-ins: one subpackage per runtime (``ort``, ``tvm``, ``trt``, ``vta``, ...), found by discovery.

Each subpackage ``edgeprune/backends/<name>/`` registers one :class:`Backend`
object in its ``__init__.py`` (``BACKENDS.register(name)(TheBackend())``);
there is no hand-kept list. Importing a subpackage is light: the runtime
(onnxruntime, tvm, tensorrt, ...) is imported inside the backend's methods.

    get_backend("ort").time_onnx(path, target, protocol)
    backend_names()                      # ['ort', 'trt', 'tvm', 'vta']
    availability(get_target("cpu-ort"))  # (True, "")
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING

from edgeprune.backends.base import Backend, Engine, check_options, option_names
from edgeprune.registry import Registry

if TYPE_CHECKING:
    from edgeprune.config import Target

BACKENDS: Registry[Backend] = Registry("backend")


def _discover() -> None:
    """Import every subpackage of ``edgeprune.backends`` (each registers its backend; imports are cached)."""
    for info in pkgutil.iter_modules(__path__):
        if info.ispkg:
            importlib.import_module(f"{__name__}.{info.name}")


def get_backend(name: str) -> Backend:
    """The backend registered as ``name`` (one-line BadInput listing the known ones otherwise)."""
    _discover()
    return BACKENDS.get(name)


def backend_names() -> list[str]:
    """Names of every backend found in ``edgeprune/backends/``, sorted."""
    _discover()
    return BACKENDS.names()


def availability(target: Target) -> tuple[bool, str]:
    """Whether ``target`` can run here, with the reason when not."""
    _discover()
    if target.backend not in BACKENDS:
        return False, f"backend {target.backend} not implemented"
    return BACKENDS.get(target.backend).availability(target)


__all__ = ["BACKENDS", "Backend", "Engine", "availability", "backend_names", "check_options", "get_backend", "option_names"]
