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


def _calib(calib: Any, example: Any) -> Any:
    """The images a VTA build calibrates on: the first 64 of ``calib`` (as the emitter), else the example."""
    return example if calib is None else calib[:64]


class VtaBackend(Backend):
    """The VTA accelerator, simulated cycle by cycle (int8 layers; fp32 is priced as int8 on VTA)."""

    name = "vta"
    unit = "cycles"
    simulated = True
    int8_only = True
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
        """The simulated cycles of a whole VTA build, read from its report (``report.json`` with ``cycles``).

        A VTA engine is compiled from the PyTorch model, not from ONNX: :meth:`engine_file` (and the emitter)
        write that report; an ONNX file cannot be timed here (layers are priced from their signatures).
        """
        from edgeprune.fileio import read_json
        from edgeprune.profile.timing import Timing

        path = Path(onnx_path)
        if path.suffix != ".json":
            raise NotImplementedError("the vta backend times its own builds (engine_file), not ONNX files")
        cycles = float(read_json(path, "VTA build report")["cycles"])
        return Timing(cycles, cycles, cycles, 1, "cycles")

    def engine_file(self, model: nn.Module, target: Target, example: Any, precisions: Any, calib: Any,
                    directory: Path, name: str = "model") -> tuple[Path, list[str]]:
        """Quantise and compile ``model`` for VTA (int8 whatever ``precisions`` say; no functional run) and write
        ``<name>.vta.json`` with its simulated cycles: what :meth:`time_onnx` reads."""
        from edgeprune.fileio import write_json
        from edgeprune.vta import compile_qnet, quantize_model
        from edgeprune.vta.build import is_resnet_family
        from edgeprune.vta.cnn import quantize_cnn
        from edgeprune.vta.cnn_program import compile_cnn

        images = _calib(calib, example)
        if is_resnet_family(model):
            program = compile_qnet(quantize_model(model, images), vta_config(target))
            cycles = int(sum(t.cycles for t in program.timings))
        else:  # any other CNN: accelerator kernels + host steps with their DMA (edgeprune.vta.cnn)
            cycles = int(compile_cnn(quantize_cnn(model, images), vta_config(target)).cycles)
        return write_json(Path(directory) / f"{name}.vta.json", {"cycles": cycles, "simulated": True}), []

    def engine_timing_file(self, engine: Engine) -> tuple[Path | None, list[str]]:
        """The emitted build's report (simulated cycles)."""
        return engine.files.get("vta_report"), []

    def emit(self, model: nn.Module, target: Target, out_dir: Path, example: Any, options: dict[str, Any]) -> Engine:
        """The simulated "FPGA build" (instruction stream, weights, report); see :mod:`.emit`."""
        from edgeprune.backends.vta.emit import emit_vta

        return emit_vta(model, target, out_dir, example, options)

    def compile_options(self, calib: Any, int8: bool, exclude: Sequence[str] = ()) -> dict[str, Any]:
        """Calibrate the int8 build on the first 64 images; ``--int8`` is implied (every layer runs int8)."""
        if int8:
            raise BadInput("--int8 applies to ort targets (vta is always int8)")
        return {"calib": None if calib is None else calib[:64]}

    def verify_threshold(self, quantized: bool) -> float:
        """The int8 engine (power-of-two scales, per-channel weights) must agree with PyTorch on 90% of images."""
        return 90.0

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

