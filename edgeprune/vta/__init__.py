"""A cycle-approximate simulator of the VTA accelerator architecture, an int8 compiler to its ISA, and an "FPGA build".

VTA (Versatile Tensor Accelerator) was Apache TVM's open FPGA accelerator.
This package is edgeprune's own numpy model of its architecture: not an RTL
simulation and not a measurement on hardware (docs/vta.md).

Public API:

* :class:`VTAConfig`, :data:`BOARDS` - the ``vta_config.json`` fields and board presets;
* :mod:`edgeprune.vta.isa` - instructions, binary encoding, listings;
* :func:`quantize_model`, :func:`reference_forward` - int8 quantisation and the numpy reference;
* :func:`compile_qnet`, :func:`run_program` - instruction streams and functional simulation;
* :func:`simulate_timing` - cycles, traffic and stalls of a stream;
* :func:`layer_cycles` - cost of one layer configuration (the ``vta`` profiler backend);
* :func:`build` - the "FPGA build" (program.bin, program.lst, weights.bin, report.json).

Names are imported on first use: ``edgeprune.vta.config`` (read to list the ``vta-*`` targets)
does not pull in torch. ``edgeprune.vta.build`` is the function (import it from here); its module
is ``sys.modules["edgeprune.vta.build"]``.
"""
from __future__ import annotations

import importlib
import sys
from typing import Any

_NAMES = {
    "DISCLAIMER": "build", "build": "build", "layer_cycles": "build", "program_report": "build", "roofline": "build",
    "DoesNotFit": "compiler", "LayerGeom": "compiler", "TilePlan": "compiler", "emit_kernel": "compiler",
    "BOARDS": "config", "VTAConfig": "config",
    "Machine": "functional", "SimulationError": "functional",
    "Program": "program", "compile_qnet": "program", "run_program": "program",
    "QNet": "quantize", "quantize_model": "quantize", "reference_forward": "quantize",
    "Deadlock": "timing", "TimingResult": "timing", "simulate_timing": "timing",
}

__all__ = [
    "BOARDS", "DISCLAIMER", "Deadlock", "DoesNotFit", "LayerGeom", "Machine", "Program", "QNet", "SimulationError",
    "TilePlan", "TimingResult", "VTAConfig", "build", "compile_qnet", "emit_kernel", "layer_cycles", "program_report",
    "quantize_model", "reference_forward", "roofline", "run_program", "simulate_timing",
]


def __getattr__(name: str) -> Any:
    module = _NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'edgeprune.vta' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"edgeprune.vta.{module}"), name)
    globals()[name] = value
    sub = sys.modules.get(f"{__name__}.build")
    if sub is not None and globals().get("build") is sub:  # importing the submodule bound its name: the function wins
        globals()["build"] = sub.build
    return value


def __dir__() -> list[str]:
    return __all__
