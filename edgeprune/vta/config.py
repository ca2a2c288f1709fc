"""VTA hardware configuration: the fields of VTA's ``vta_config.json`` plus a board.

The architectural parameters (``LOG_*``) are those of Apache TVM's VTA
(``3rdparty/vta-hw/config/vta_config.json``); the default is the 1x16x16
int8 GEMM core of the Pynq/Ultra96 builds.  The board part (clock, AXI bus
width, DRAM latency) and the pipeline constants are the timing model's
assumptions; docs/vta.md says where each number comes from.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from edgeprune.errors import BadInput

#: The ``vta_config.json`` keys this model uses (others, like TARGET or HW_VER, are ignored).
LOG_FIELDS = (
    "LOG_INP_WIDTH",
    "LOG_WGT_WIDTH",
    "LOG_ACC_WIDTH",
    "LOG_BATCH",
    "LOG_BLOCK",
    "LOG_UOP_BUFF_SIZE",
    "LOG_INP_BUFF_SIZE",
    "LOG_WGT_BUFF_SIZE",
    "LOG_ACC_BUFF_SIZE",
)


@dataclass(frozen=True)
class VTAConfig:
    """One VTA build: the ``vta_config.json`` fields, the board's clock and bus, and timing constants.

    Derived sizes (``block``, ``inp_depth`` ...) are properties.  Depths count
    SRAM *entries*: one input entry is a BATCH x BLOCK int8 vector, one weight
    entry a BLOCK x BLOCK int8 matrix, one accumulator entry a BATCH x BLOCK
    int32 vector, one micro-op 32 bits.
    """

    LOG_INP_WIDTH: int = 3
    LOG_WGT_WIDTH: int = 3
    LOG_ACC_WIDTH: int = 5
    LOG_BATCH: int = 0
    LOG_BLOCK: int = 4
    LOG_UOP_BUFF_SIZE: int = 15
    LOG_INP_BUFF_SIZE: int = 15
    LOG_WGT_BUFF_SIZE: int = 18
    LOG_ACC_BUFF_SIZE: int = 17
    # board
    board: str = "pynq"
    clock_mhz: float = 100.0
    axi_bytes: int = 8  # AXI data bus width in bytes (64-bit)
    # timing-model constants (assumptions, documented in docs/vta.md)
    dram_latency: int = 64  # cycles from a DRAM read/write request to its first beat
    burst_overhead: int = 1  # cycles per extra 2-D row (a new AXI burst address)
    gemm_fill: int = 6  # GEMM pipeline depth (uop read, SRAM read, multiply, adder tree, acc write)
    alu_fill: int = 4  # ALU pipeline depth
    alu_ii: int = 2  # ALU initiation interval: cycles per vector op (two accumulator reads per write)
    cmd_queue_depth: int = 8  # depth of the fetch -> load/compute/store command queues
    insn_bytes: int = 16  # one 128-bit instruction

    def __post_init__(self) -> None:
        for f in LOG_FIELDS:
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 31:
                raise BadInput(f"VTA config: {f} must be an integer in 0..31, got {v!r}")
        if (self.LOG_INP_WIDTH, self.LOG_WGT_WIDTH, self.LOG_ACC_WIDTH) != (3, 3, 5):
            raise BadInput("VTA config: only int8 inputs/weights with int32 accumulators are simulated "
                           "(LOG_INP_WIDTH=3, LOG_WGT_WIDTH=3, LOG_ACC_WIDTH=5)")
        if self.LOG_BATCH != 0:
            raise BadInput("VTA config: only LOG_BATCH=0 (batch 1) is simulated")
        if self.axi_bytes < 1 or self.clock_mhz <= 0:
            raise BadInput("VTA config: axi_bytes and clock_mhz must be positive")
        for name in ("inp_depth", "wgt_depth", "acc_depth", "uop_depth"):
            if getattr(self, name) < 1:
                raise BadInput(f"VTA config: buffer too small for one entry ({name} = 0)")

    # ------------------------------------------------------------------ derived sizes
    @property
    def batch(self) -> int:
        """BATCH: rows of one GEMM (1)."""
        return 1 << self.LOG_BATCH

    @property
    def block(self) -> int:
        """BLOCK_IN = BLOCK_OUT: the GEMM core is BATCH x BLOCK x BLOCK (16)."""
        return 1 << self.LOG_BLOCK

    @property
    def inp_elem_bytes(self) -> int:
        """Bytes of one input-buffer entry (BATCH x BLOCK int8)."""
        return self.batch * self.block * (1 << self.LOG_INP_WIDTH) // 8

    @property
    def wgt_elem_bytes(self) -> int:
        """Bytes of one weight-buffer entry (BLOCK x BLOCK int8)."""
        return self.block * self.block * (1 << self.LOG_WGT_WIDTH) // 8

    @property
    def acc_elem_bytes(self) -> int:
        """Bytes of one accumulator entry (BATCH x BLOCK int32)."""
        return self.batch * self.block * (1 << self.LOG_ACC_WIDTH) // 8

    @property
    def out_elem_bytes(self) -> int:
        """Bytes of one output-buffer entry (BATCH x BLOCK int8)."""
        return self.inp_elem_bytes

    uop_elem_bytes = 4

    @property
    def inp_depth(self) -> int:
        """Entries of the input buffer."""
        return (1 << self.LOG_INP_BUFF_SIZE) // self.inp_elem_bytes

    @property
    def wgt_depth(self) -> int:
        """Entries of the weight buffer."""
        return (1 << self.LOG_WGT_BUFF_SIZE) // self.wgt_elem_bytes

    @property
    def acc_depth(self) -> int:
        """Entries of the accumulator (register file); the output buffer has as many."""
        return (1 << self.LOG_ACC_BUFF_SIZE) // self.acc_elem_bytes

    @property
    def out_depth(self) -> int:
        """Entries of the output buffer (VTA sizes it like the accumulator)."""
        return self.acc_depth

    @property
    def uop_depth(self) -> int:
        """Micro-ops the micro-op buffer holds."""
        return (1 << self.LOG_UOP_BUFF_SIZE) // self.uop_elem_bytes

    @property
    def macs_per_cycle(self) -> int:
        """Peak int8 multiply-accumulates per cycle (BATCH x BLOCK x BLOCK)."""
        return self.batch * self.block * self.block

    @property
    def peak_gops(self) -> float:
        """Peak GOP/s (2 ops per MAC) at the board's clock."""
        return 2 * self.macs_per_cycle * self.clock_mhz * 1e6 / 1e9

    def cycles_to_ms(self, cycles: float) -> float:
        """Milliseconds for ``cycles`` at the board's clock."""
        return cycles / (self.clock_mhz * 1e3)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def preset(cls, name: str, **overrides: Any) -> VTAConfig:
        """The default VTA core on a named board (``pynq``, ``de10nano``, ``ultra96``, ``zcu104``)."""
        key = name.lower()
        if key not in BOARDS:
            raise BadInput(f"unknown VTA board {name!r} (known: {', '.join(BOARDS)})")
        return replace(BOARDS[key], **overrides) if overrides else BOARDS[key]

    @classmethod
    def from_json(cls, source: str | os.PathLike[str] | Mapping[str, Any], board: str = "pynq") -> VTAConfig:
        """Read VTA's ``vta_config.json`` (a path or a parsed dict) onto a board preset.

        Keys other than the ``LOG_*`` fields are ignored, except ``TARGET`` which,
        when it names a known board, picks that preset.
        """
        if isinstance(source, Mapping):
            raw = dict(source)
        else:
            path = Path(source)
            try:
                raw = json.loads(path.read_text(encoding="utf-8"))
            except FileNotFoundError:
                raise BadInput(f"VTA config not found: {path}") from None
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
                raise BadInput(f"cannot read VTA config {path}: {err}") from None
            if not isinstance(raw, dict):
                raise BadInput(f"VTA config {path}: expected a JSON object")
        target = str(raw.get("TARGET", board)).lower()
        base = BOARDS.get(target, BOARDS.get(board.lower()))
        if base is None:
            raise BadInput(f"unknown VTA board {board!r} (known: {', '.join(BOARDS)})")
        logs = {k: raw[k] for k in LOG_FIELDS if k in raw}
        return replace(base, **logs)

    def to_json_dict(self) -> dict[str, Any]:
        """The ``vta_config.json`` fields (plus board and timing constants), JSON-friendly."""
        d = asdict(self)
        d["derived"] = {
            "batch": self.batch,
            "block": self.block,
            "inp_depth": self.inp_depth,
            "wgt_depth": self.wgt_depth,
            "acc_depth": self.acc_depth,
            "out_depth": self.out_depth,
            "uop_depth": self.uop_depth,
            "macs_per_cycle": self.macs_per_cycle,
            "peak_gops": self.peak_gops,
        }
        return d


#: Board presets: the default 1x16x16 core at each board's clock and AXI width.
BOARDS: dict[str, VTAConfig] = {
    "pynq": VTAConfig(board="pynq", clock_mhz=100.0, axi_bytes=8),
    "de10nano": VTAConfig(board="de10nano", clock_mhz=100.0, axi_bytes=8),
    "ultra96": VTAConfig(board="ultra96", clock_mhz=333.0, axi_bytes=16),
    "zcu104": VTAConfig(board="zcu104", clock_mhz=333.0, axi_bytes=16),
}
