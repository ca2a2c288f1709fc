"""Emit the engine of a model for a target: ``compile(model, target, out, example, **options)``.

The emitters live with their backends (``edgeprune/backends/<name>/emit.py``);
this is the one entry point that picks the target's backend and calls it.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeprune.backends.base import Engine

if TYPE_CHECKING:
    from torch import nn

    from edgeprune.config import Target


def compile(model: nn.Module, target: Target | str, out: str | Path, example: Any, **options: Any) -> Engine:
    """Emit the engine of ``model`` for ``target`` into ``out`` (files + manifest.json)."""
    from edgeprune.backends import get_backend
    from edgeprune.config import get_target

    target = get_target(target)
    backend = get_backend(target.backend)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return backend.emit(model, target, out, example, dict(options))


__all__ = ["Engine", "compile"]

from edgeprune._callable import make_callable

make_callable(__name__, "compile")
