"""VTA backend (``vta-*`` targets): simulated cycles from edgeprune's own VTA timing model.

The simulator is deterministic, so a layer is "timed" once (count 1, p10 =
p90 = median) and the unit is cycles, not milliseconds. It is a
cycle-approximate model of the VTA architecture, not an RTL simulation.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeprune.backends.base import Backend, Engine
from edgeprune.backends.vta.options import VtaOptions
from edgeprune.errors import BadInput

if TYPE_CHECKING:
    from torch import nn

    from edgeprune.config import Target
    from edgeprune.graph.signature import LayerSignature
    from edgeprune.profile.timing import Timing, TimingProtocol


def _layer_cycles():
    from edgeprune.vta import layer_cycles  # lazily: the simulator is a sibling package

    return layer_cycles


def vta_config(target: Target) -> Any:
    """The VTAConfig of a target: ``VTAConfig.preset(options.board)`` with the target's clock."""
    from edgeprune.vta.config import VTAConfig

    board = str(target.options.get("board", VtaOptions.board))
    cfg = VTAConfig.preset(board)
    if target.clock_mhz and float(target.clock_mhz) != cfg.clock_mhz:
        from dataclasses import replace

        cfg = replace(cfg, clock_mhz=float(target.clock_mhz))
    return cfg


class VtaBackend(Backend):
    """The VTA accelerator, simulated cycle by cycle (int8 layers; fp32 is priced as int8 on VTA)."""

    name = "vta"
    unit = "cycles"
    simulated = True
    options_schema = VtaOptions
    description = "VTA accelerator, cycle-approximate simulator (cycles)"

    def availability(self, target: Target) -> tuple[bool, str]:
        try:
            vta_config(target)
        except Exception as err:  # noqa: BLE001 - unknown board etc.
            return False, f"unavailable: {err}"
        return True, ""

    def time_layer(self, sig: LayerSignature, target: Target, protocol: TimingProtocol) -> Timing:
        return self.time_layer_detail(sig, target, protocol)[0]

    def time_layer_detail(self, sig: LayerSignature, target: Target, protocol: TimingProtocol) -> tuple[Timing, dict]:
        from edgeprune.profile.timing import Timing

        res = _layer_cycles()(sig, vta_config(target))
        cycles = float(res["cycles"] if isinstance(res, dict) else res)
        meta = {k: v for k, v in res.items() if k != "cycles" and isinstance(v, (int, float, str))} if isinstance(res, dict) else {}
        return Timing(cycles, cycles, cycles, 1, "cycles"), meta

    def time_onnx(self, onnx_path: str | Path, target: Target, protocol: TimingProtocol,
                  disabled_optimizers: Sequence[str] = ()) -> Timing:
        """Not possible: whole models are priced as the sum of their layers' simulated cycles."""
        raise NotImplementedError("the vta backend prices layers from signatures; whole models are the sum of their layers")

    def emit(self, model: nn.Module, target: Target, out_dir: Path, example: Any, options: dict[str, Any]) -> Engine:
        """The simulated "FPGA build" (instruction stream, weights, report); see :mod:`.emit`."""
        from edgeprune.backends.vta.emit import emit_vta

        return emit_vta(model, target, out_dir, example, options)

    def compile_options(self, calib: Any, int8: bool) -> dict[str, Any]:
        """Calibrate the int8 build on the first 64 images; ``--int8`` is implied."""
        if int8:
            raise BadInput("--int8 applies to ort targets (vta is always int8)")
        return {"calib": calib[:64]}

    def engine_report(self, engine: Engine) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
        """The simulator's cycle report and its bit-exactness against the int8 reference."""
        rep = engine.manifest["report"]
        fields = {"vta": {k: rep.get(k) for k in ("cycles", "time_ms", "fits", "dram_bytes", "instructions", "verification")}}
        rows = [("simulated cycles", rep.get("cycles")), ("time at clock (ms)", rep.get("time_ms")),
                ("bit-exact vs int8 reference", rep.get("verification", {}).get("bit_exact"))]
        return fields, rows

    def check_engine(self, engine: Engine) -> str | None:
        """The simulated build must be bit-exact against the numpy int8 reference."""
        if not engine.manifest["report"].get("verification", {}).get("bit_exact", True):
            return "VTA simulation is not bit-exact against the int8 reference"
        return None

