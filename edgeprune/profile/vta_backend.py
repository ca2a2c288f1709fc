"""VTA backend (``vta-*`` targets): simulated cycles from edgeprune's own VTA timing model.

The simulator is deterministic, so a layer is "timed" once (count 1, p10 =
p90 = median) and the unit is cycles, not milliseconds. It is a
cycle-approximate model of the VTA architecture, not an RTL simulation.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeprune.profile.backends import BACKENDS, Backend
from edgeprune.profile.timing import Timing, TimingProtocol

if TYPE_CHECKING:
    from edgeprune.config import Target
    from edgeprune.graph.signature import LayerSignature


def _layer_cycles():
    from edgeprune.vta import layer_cycles  # lazily: the simulator is a sibling package

    return layer_cycles


def vta_config(target: Target) -> Any:
    """The VTAConfig of a target: ``VTAConfig.preset(options.board)`` with the target's clock."""
    from edgeprune.vta.config import VTAConfig

    board = str(target.options.get("board", "pynq"))
    cfg = VTAConfig.preset(board)
    if target.clock_mhz and float(target.clock_mhz) != cfg.clock_mhz:
        from dataclasses import replace

        cfg = replace(cfg, clock_mhz=float(target.clock_mhz))
    return cfg


class VtaBackend(Backend):
    """The VTA accelerator, simulated cycle by cycle (int8 layers; fp32 is priced as int8 on VTA)."""

    name = "vta"
    unit = "cycles"

    def availability(self, target: Target) -> tuple[bool, str]:
        try:
            vta_config(target)
        except Exception as err:  # noqa: BLE001 - unknown board etc.
            return False, f"unavailable: {err}"
        return True, ""

    def time_layer(self, sig: LayerSignature, target: Target, protocol: TimingProtocol) -> Timing:
        return self.time_layer_detail(sig, target, protocol)[0]

    def time_layer_detail(self, sig: LayerSignature, target: Target, protocol: TimingProtocol) -> tuple[Timing, dict]:
        res = _layer_cycles()(sig, vta_config(target))
        cycles = float(res["cycles"] if isinstance(res, dict) else res)
        meta = {k: v for k, v in res.items() if k != "cycles" and isinstance(v, (int, float, str))} if isinstance(res, dict) else {}
        return Timing(cycles, cycles, cycles, 1, "cycles"), meta

    def time_onnx(self, onnx_path: str | Path, target: Target, protocol: TimingProtocol) -> Timing:
        raise NotImplementedError("the vta backend prices layers from signatures; whole models are the sum of their layers")


BACKENDS.register("vta", "VTA accelerator, cycle-approximate simulator (cycles)")(VtaBackend())
