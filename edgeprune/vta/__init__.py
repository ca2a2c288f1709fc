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
"""
from __future__ import annotations

from edgeprune.vta.build import DISCLAIMER, build, layer_cycles, program_report, roofline
from edgeprune.vta.compiler import DoesNotFit, LayerGeom, TilePlan, emit_kernel
from edgeprune.vta.config import BOARDS, VTAConfig
from edgeprune.vta.functional import Machine, SimulationError
from edgeprune.vta.program import Program, compile_qnet, run_program
from edgeprune.vta.quantize import QNet, quantize_model, reference_forward
from edgeprune.vta.timing import Deadlock, TimingResult, simulate_timing

__all__ = [
    "BOARDS", "DISCLAIMER", "Deadlock", "DoesNotFit", "LayerGeom", "Machine", "Program", "QNet", "SimulationError",
    "TilePlan", "TimingResult", "VTAConfig", "build", "compile_qnet", "emit_kernel", "layer_cycles", "program_report",
    "quantize_model", "reference_forward", "roofline", "run_program", "simulate_timing",
]
