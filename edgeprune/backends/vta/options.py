"""The ``[options]`` a ``backend = "vta"`` target may set."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VtaOptions:
    """Known keys of a vta target's ``[options]`` table."""

    board: str = "pynq"  # VTAConfig preset (pynq, ultra96, ...)
