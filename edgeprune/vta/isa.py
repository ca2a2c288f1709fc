"""The VTA instruction set: LOAD, STORE, GEMM, ALU, FINISH; micro-ops; binary encoding; listings.

Modelled on VTA's ``hw_spec.h``: 128-bit instructions, each carrying four
dependency flags (pop/push the previous/next module's token queue), 2-D
strided loads with zero padding, and GEMM/ALU instructions that run a
two-level loop (``iter_out`` x ``iter_in``) over a range of micro-ops held in
the micro-op buffer.  The bit layout follows VTA's field order with widths
derived from the configuration (like VTA's own ``LOG_*_BUFF_DEPTH`` widths);
it is VTA-like, not guaranteed bit-compatible with a VTA bitstream.

Module routing (as in VTA): LOAD of INP/WGT goes to the *load* module; LOAD
of UOP/ACC/ACC_8BIT, GEMM, ALU and FINISH to *compute*; STORE to *store*.
For a load instruction "next" is compute; for compute "prev" is load and
"next" is store; for store "prev" is compute.  Queues: l2c, c2l, c2s, s2c.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from enum import IntEnum

import numpy as np

from edgeprune.vta.config import VTAConfig


class Opcode(IntEnum):
    """Instruction opcodes (VTA's values)."""

    LOAD = 0
    STORE = 1
    GEMM = 2
    FINISH = 3
    ALU = 4


class MemType(IntEnum):
    """Memory ids of LOAD/STORE (VTA's values; ACC_8BIT loads int8 into the accumulator, sign-extended)."""

    UOP = 0
    WGT = 1
    INP = 2
    ACC = 3
    OUT = 4
    ACC_8BIT = 5


class AluOp(IntEnum):
    """ALU opcodes (VTA's values). SHR by a negative amount shifts left."""

    MIN = 0
    MAX = 1
    ADD = 2
    SHR = 3


class Module(IntEnum):
    """The modules behind the fetch unit."""

    LOAD = 0
    COMPUTE = 1
    STORE = 2


@dataclass(frozen=True)
class Deps:
    """Dependency-token flags of one instruction."""

    pop_prev: bool = False
    pop_next: bool = False
    push_prev: bool = False
    push_next: bool = False

    def __str__(self) -> str:
        names = [n for n in ("pop_prev", "pop_next", "push_prev", "push_next") if getattr(self, n)]
        return " ".join(names)


NO_DEPS = Deps()


@dataclass(frozen=True)
class MemInsn:
    """LOAD or STORE of a 2-D block: ``y_size`` rows of ``x_size`` entries, DRAM row stride ``x_stride``.

    Addresses count entries of the memory type (DRAM byte address =
    ``dram_base * entry_bytes``).  Loads write a (y_pad0 + y_size + y_pad1) x
    (x_pad0 + x_size + x_pad1) block of SRAM entries from ``sram_base`` on,
    zeros in the padding.
    """

    opcode: Opcode
    mem_type: MemType
    sram_base: int
    dram_base: int
    y_size: int
    x_size: int
    x_stride: int
    y_pad0: int = 0
    y_pad1: int = 0
    x_pad0: int = 0
    x_pad1: int = 0
    deps: Deps = NO_DEPS

    @property
    def module(self) -> Module:
        """Which module executes it."""
        if self.opcode == Opcode.STORE:
            return Module.STORE
        return Module.LOAD if self.mem_type in (MemType.INP, MemType.WGT) else Module.COMPUTE

    @property
    def sram_entries(self) -> int:
        """SRAM entries written (loads, padding included) or read (stores)."""
        return (self.y_pad0 + self.y_size + self.y_pad1) * (self.x_pad0 + self.x_size + self.x_pad1)


@dataclass(frozen=True)
class GemmInsn:
    """``for i in iter_out: for j in iter_in: for u in uops[uop_bgn:uop_end]: acc[dst] += inp[src] @ wgt[w]^T``.

    With ``dst = u.dst + i*dst_factor_out + j*dst_factor_in`` (and likewise
    src, wgt).  ``reset`` zeroes ``acc[dst]`` instead.
    """

    reset: bool
    uop_bgn: int
    uop_end: int
    iter_out: int
    iter_in: int
    dst_factor_out: int
    dst_factor_in: int
    src_factor_out: int
    src_factor_in: int
    wgt_factor_out: int
    wgt_factor_in: int
    deps: Deps = NO_DEPS
    opcode: Opcode = Opcode.GEMM
    module: Module = Module.COMPUTE

    @property
    def ops(self) -> int:
        """Block operations (cycles at II=1) it issues."""
        return self.iter_out * self.iter_in * (self.uop_end - self.uop_bgn)


@dataclass(frozen=True)
class AluInsn:
    """``acc[dst] = op(acc[dst], imm if use_imm else acc[src])`` over the same loop nest as GEMM."""

    alu_op: AluOp
    use_imm: bool
    imm: int
    uop_bgn: int
    uop_end: int
    iter_out: int
    iter_in: int
    dst_factor_out: int
    dst_factor_in: int
    src_factor_out: int
    src_factor_in: int
    deps: Deps = NO_DEPS
    opcode: Opcode = Opcode.ALU
    module: Module = Module.COMPUTE

    @property
    def ops(self) -> int:
        """Vector operations it issues."""
        return self.iter_out * self.iter_in * (self.uop_end - self.uop_bgn)


@dataclass(frozen=True)
class FinishInsn:
    """End of a kernel: raises the done flag the host polls."""

    deps: Deps = NO_DEPS
    opcode: Opcode = Opcode.FINISH
    module: Module = Module.COMPUTE


Insn = MemInsn | GemmInsn | AluInsn | FinishInsn


# --------------------------------------------------------------------------- bit layout
def _log2(n: int) -> int:
    return max(1, (n - 1).bit_length())


def field_widths(config: VTAConfig) -> dict[str, list[tuple[str, int]]]:
    """Bit layout (LSB first) of each instruction kind for ``config``."""
    uop = _log2(config.uop_depth)
    acc = _log2(config.acc_depth)
    src = max(_log2(config.inp_depth), acc)
    wgt = _log2(config.wgt_depth)
    head = [("opcode", 3), ("pop_prev", 1), ("pop_next", 1), ("push_prev", 1), ("push_next", 1)]
    loops = [("uop_bgn", uop), ("uop_end", uop + 1), ("iter_out", 14), ("iter_in", 14),
             ("dst_factor_out", acc), ("dst_factor_in", acc), ("src_factor_out", src), ("src_factor_in", src)]
    return {
        "mem": head + [("mem_type", 3), ("sram_base", 16), ("dram_base", 32), ("y_size", 16), ("x_size", 16),
                       ("x_stride", 16), ("y_pad0", 4), ("y_pad1", 4), ("x_pad0", 4), ("x_pad1", 4)],
        "gemm": head + [("reset", 1)] + loops + [("wgt_factor_out", wgt), ("wgt_factor_in", wgt)],
        "alu": head + [("reset", 1)] + loops + [("alu_op", 3), ("use_imm", 1), ("imm", 16)],
        "finish": head,
        "uop": [("dst", acc), ("src", src), ("wgt", wgt)],
    }


def _kind(insn: Insn) -> str:
    return {Opcode.LOAD: "mem", Opcode.STORE: "mem", Opcode.GEMM: "gemm", Opcode.ALU: "alu",
            Opcode.FINISH: "finish"}[insn.opcode]


def _values(insn: Insn) -> dict[str, int]:
    v: dict[str, int] = {"opcode": int(insn.opcode)}
    for n in ("pop_prev", "pop_next", "push_prev", "push_next"):
        v[n] = int(getattr(insn.deps, n))
    for f in fields(insn):
        if f.name in ("deps", "opcode", "module"):
            continue
        val = getattr(insn, f.name)
        v[f.name] = int(val)
    if isinstance(insn, AluInsn):
        v["reset"] = 0
        v["imm"] = insn.imm & 0xFFFF
    return v


class EncodingError(ValueError):
    """A field does not fit its bits."""


def encode(insn: Insn, config: VTAConfig) -> bytes:
    """The 16-byte little-endian encoding of one instruction."""
    layout = field_widths(config)[_kind(insn)]
    vals = _values(insn)
    word, pos = 0, 0
    for name, bits in layout:
        val = vals[name]
        if not 0 <= val < (1 << bits):
            raise EncodingError(f"{insn.opcode.name}.{name}={val} does not fit {bits} bits")
        word |= val << pos
        pos += bits
    if pos > 128:
        raise EncodingError(f"{_kind(insn)} layout needs {pos} bits > 128 for this configuration")
    return word.to_bytes(16, "little")


def decode(data: bytes, config: VTAConfig) -> Insn:
    """Inverse of :func:`encode`."""
    word = int.from_bytes(data[:16], "little")
    opcode = Opcode(word & 7)
    kind = {Opcode.LOAD: "mem", Opcode.STORE: "mem", Opcode.GEMM: "gemm", Opcode.ALU: "alu",
            Opcode.FINISH: "finish"}[opcode]
    vals: dict[str, int] = {}
    pos = 0
    for name, bits in field_widths(config)[kind]:
        vals[name] = (word >> pos) & ((1 << bits) - 1)
        pos += bits
    deps = Deps(*(bool(vals.pop(n)) for n in ("pop_prev", "pop_next", "push_prev", "push_next")))
    vals.pop("opcode")
    if kind == "mem":
        mem_type = MemType(vals.pop("mem_type"))
        return MemInsn(opcode, mem_type, deps=deps, **vals)
    if kind == "gemm":
        return GemmInsn(reset=bool(vals.pop("reset")), deps=deps, **vals)
    if kind == "alu":
        vals.pop("reset")
        imm = vals.pop("imm")
        imm = imm - (1 << 16) if imm & 0x8000 else imm
        return AluInsn(alu_op=AluOp(vals.pop("alu_op")), use_imm=bool(vals.pop("use_imm")), imm=imm, deps=deps, **vals)
    return FinishInsn(deps=deps)


def encode_stream(insns: Iterable[Insn], config: VTAConfig) -> bytes:
    """Concatenated encodings."""
    return b"".join(encode(i, config) for i in insns)


def decode_stream(data: bytes, config: VTAConfig) -> list[Insn]:
    """Inverse of :func:`encode_stream`."""
    if len(data) % 16:
        raise EncodingError(f"instruction stream of {len(data)} bytes is not a multiple of 16")
    return [decode(data[i:i + 16], config) for i in range(0, len(data), 16)]


# --------------------------------------------------------------------------- micro-ops
def pack_uops(dst: np.ndarray, src: np.ndarray, wgt: np.ndarray, config: VTAConfig) -> np.ndarray:
    """Micro-ops as VTA stores them in DRAM: one uint32 per uop (dst | src | wgt, LSB first)."""
    (_, bd), (_, bs), (_, bw) = field_widths(config)["uop"]
    if bd + bs + bw > 32:
        raise EncodingError(f"micro-op needs {bd + bs + bw} bits > 32 for this configuration")
    dst, src, wgt = (np.asarray(a, dtype=np.int64) for a in (dst, src, wgt))
    for a, b, n in ((dst, bd, "dst"), (src, bs, "src"), (wgt, bw, "wgt")):
        if a.size and (a.min() < 0 or a.max() >= (1 << b)):
            raise EncodingError(f"micro-op {n} index out of its {b} bits")
    return (dst | (src << bd) | (wgt << (bd + bs))).astype(np.uint32)


def unpack_uops(words: np.ndarray, config: VTAConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of :func:`pack_uops`: (dst, src, wgt) int64 arrays."""
    (_, bd), (_, bs), (_, bw) = field_widths(config)["uop"]
    w = np.asarray(words, dtype=np.int64)
    return w & ((1 << bd) - 1), (w >> bd) & ((1 << bs) - 1), (w >> (bd + bs)) & ((1 << bw) - 1)


# --------------------------------------------------------------------------- listing
def format_insn(insn: Insn) -> str:
    """One readable line."""
    deps = str(insn.deps)
    tail = f"  [{deps}]" if deps else ""
    if isinstance(insn, MemInsn):
        pad = f" pad=({insn.y_pad0},{insn.y_pad1},{insn.x_pad0},{insn.x_pad1})" if (
            insn.y_pad0 or insn.y_pad1 or insn.x_pad0 or insn.x_pad1) else ""
        return (f"{insn.opcode.name:<6} {insn.mem_type.name:<8} sram={insn.sram_base:#06x} dram={insn.dram_base:#010x} "
                f"y={insn.y_size} x={insn.x_size} stride={insn.x_stride}{pad}{tail}")
    if isinstance(insn, GemmInsn):
        return (f"GEMM   {'RESET   ' if insn.reset else '        '} uop=[{insn.uop_bgn},{insn.uop_end}) "
                f"iter={insn.iter_out}x{insn.iter_in} dst=({insn.dst_factor_out},{insn.dst_factor_in}) "
                f"src=({insn.src_factor_out},{insn.src_factor_in}) wgt=({insn.wgt_factor_out},{insn.wgt_factor_in}){tail}")
    if isinstance(insn, AluInsn):
        operand = f"imm={insn.imm}" if insn.use_imm else "src=acc"
        return (f"ALU    {insn.alu_op.name:<8} {operand} uop=[{insn.uop_bgn},{insn.uop_end}) "
                f"iter={insn.iter_out}x{insn.iter_in} dst=({insn.dst_factor_out},{insn.dst_factor_in}) "
                f"src=({insn.src_factor_out},{insn.src_factor_in}){tail}")
    return f"FINISH{tail}"
