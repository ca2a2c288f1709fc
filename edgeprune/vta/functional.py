"""Functional simulation: execute VTA instructions on numpy DRAM and SRAM buffers.

Every instruction is executed as a whole with numpy (index arrays for the
micro-op loop nest, a batched block-matmul for GEMM, a sort + segmented sum
for the accumulation), so there is no per-element Python loop.  Semantics:

* GEMM: ``acc[dst] += wgt[w] @ inp[src]`` (int32, wrapping); ``reset`` zeroes ``acc[dst]``.
* ALU: ``acc[dst] = op(acc[dst], imm or acc[src])`` lane-wise, int32 wrapping;
  SHR shifts right arithmetically, left by a negative amount.
* GEMM and ALU also write the low 8 bits of each result into the output
  buffer (same index), which STORE copies to DRAM: requantisation must clip
  before, as VTA programs do.

Instructions run in program order; :func:`check_hazards` then verifies that
the overlapped schedule of the timing model reads and writes no SRAM range
that another module touches at the same time, i.e. that the dependency tokens
make the concurrent execution equal to the sequential one.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgeprune.errors import VerificationFailed
from edgeprune.vta.config import VTAConfig
from edgeprune.vta.isa import (
    AluInsn,
    AluOp,
    FinishInsn,
    GemmInsn,
    Insn,
    MemInsn,
    MemType,
    Opcode,
    unpack_uops,
)


class SimulationError(VerificationFailed):
    """An instruction addressed memory out of range, or the schedule has a hazard."""


@dataclass(frozen=True)
class Footprint:
    """An SRAM range an instruction reads or writes."""

    buffer: str  # "inp" | "wgt" | "acc" (accumulator and output buffer share indices) | "uop"
    lo: int
    hi: int  # inclusive
    write: bool


def _wrap32(a: np.ndarray) -> np.ndarray:
    return (((a.astype(np.int64) + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)).astype(np.int32)


def _shift(a: np.ndarray, s: np.ndarray) -> np.ndarray:
    a = a.astype(np.int64)
    s = s.astype(np.int64)
    right = a >> np.minimum(np.maximum(s, 0), 31)
    left = np.where(-s >= 32, 0, a << np.minimum(np.maximum(-s, 0), 31))
    return np.where(s >= 0, right, left)


class Machine:
    """DRAM plus the four SRAMs of one VTA core."""

    def __init__(self, config: VTAConfig, dram_bytes: int) -> None:
        b = config.block
        self.config = config
        self.dram = np.zeros(-(-dram_bytes // 256) * 256, np.uint8)
        self.inp = np.zeros((config.inp_depth, b), np.int8)
        self.wgt = np.zeros((config.wgt_depth, b, b), np.int8)
        self.acc = np.zeros((config.acc_depth, b), np.int32)
        self.out = np.zeros((config.out_depth, b), np.int8)
        self.uop = np.zeros(config.uop_depth, np.uint32)

    # ------------------------------------------------------------------ DRAM views
    def dram_view(self, mem_type: MemType) -> np.ndarray:
        """The DRAM as an array of ``mem_type`` entries."""
        b = self.config.block
        if mem_type == MemType.UOP:
            return self.dram.view(np.uint32)
        if mem_type == MemType.WGT:
            return self.dram.view(np.int8).reshape(-1, b, b)
        if mem_type == MemType.ACC:
            return self.dram.view(np.int32).reshape(-1, b)
        return self.dram.view(np.int8).reshape(-1, b)

    def write_dram(self, byte_addr: int, data: np.ndarray) -> None:
        """Copy ``data`` (any dtype) into DRAM at ``byte_addr``."""
        raw = np.ascontiguousarray(data).view(np.uint8).ravel()
        self.dram[byte_addr:byte_addr + raw.size] = raw

    def read_dram(self, byte_addr: int, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
        """A copy of DRAM at ``byte_addr`` as ``shape`` x ``dtype``."""
        n = int(np.prod(shape)) * np.dtype(dtype).itemsize
        return self.dram[byte_addr:byte_addr + n].copy().view(dtype).reshape(shape)

    # ------------------------------------------------------------------ execution
    def _sram(self, mem_type: MemType) -> tuple[np.ndarray, str]:
        return {MemType.UOP: (self.uop, "uop"), MemType.WGT: (self.wgt, "wgt"), MemType.INP: (self.inp, "inp"),
                MemType.ACC: (self.acc, "acc"), MemType.ACC_8BIT: (self.acc, "acc"),
                MemType.OUT: (self.out, "acc")}[mem_type]

    def _loop_index(self, insn: GemmInsn | AluInsn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not 0 <= insn.uop_bgn <= insn.uop_end <= self.config.uop_depth:
            raise SimulationError(f"micro-op range [{insn.uop_bgn},{insn.uop_end}) outside the buffer")
        d, s, w = unpack_uops(self.uop[insn.uop_bgn:insn.uop_end], self.config)
        i = np.arange(insn.iter_out)[:, None, None]
        j = np.arange(insn.iter_in)[None, :, None]
        dst = (d[None, None, :] + i * insn.dst_factor_out + j * insn.dst_factor_in).ravel()
        src = (s[None, None, :] + i * insn.src_factor_out + j * insn.src_factor_in).ravel()
        wgt = (w[None, None, :] + i * (insn.wgt_factor_out if isinstance(insn, GemmInsn) else 0)
               + j * (insn.wgt_factor_in if isinstance(insn, GemmInsn) else 0)).ravel()
        return dst, src, wgt

    @staticmethod
    def _check(idx: np.ndarray, depth: int, what: str) -> None:
        if idx.size and (idx.min() < 0 or idx.max() >= depth):
            raise SimulationError(f"{what} index {int(idx.max())} outside its buffer of {depth} entries")

    def execute(self, insn: Insn) -> list[Footprint]:
        """Execute one instruction; returns the SRAM ranges it touched."""
        if isinstance(insn, MemInsn):
            return self._mem(insn)
        if isinstance(insn, GemmInsn):
            return self._gemm(insn)
        if isinstance(insn, AluInsn):
            return self._alu(insn)
        if isinstance(insn, FinishInsn):
            return []
        raise SimulationError(f"unknown instruction {insn!r}")

    def _mem(self, insn: MemInsn) -> list[Footprint]:
        sram, name = self._sram(insn.mem_type)
        view = self.dram_view(insn.mem_type)
        rows = insn.dram_base + np.arange(insn.y_size)[:, None] * insn.x_stride + np.arange(insn.x_size)[None, :]
        n = insn.sram_entries
        if insn.sram_base + n > len(sram):
            raise SimulationError(f"{insn.opcode.name} {insn.mem_type.name}: SRAM range "
                                  f"[{insn.sram_base},{insn.sram_base + n}) outside {len(sram)} entries")
        if n == 0:
            return []
        self._check(rows, len(view), f"DRAM {insn.mem_type.name}")
        fp = Footprint(name, insn.sram_base, insn.sram_base + n - 1, insn.opcode == Opcode.LOAD)
        if insn.opcode == Opcode.STORE:
            if insn.mem_type != MemType.OUT:
                raise SimulationError("STORE supports the output buffer only")
            block = self.out[insn.sram_base:insn.sram_base + n].reshape(insn.y_size, insn.x_size, -1)
            view[rows] = block
            return [fp]
        data = view[rows]
        if insn.mem_type == MemType.ACC_8BIT:
            data = data.astype(np.int32)
        h = insn.y_pad0 + insn.y_size + insn.y_pad1
        w = insn.x_pad0 + insn.x_size + insn.x_pad1
        block = np.zeros((h, w) + data.shape[2:], sram.dtype)
        block[insn.y_pad0:insn.y_pad0 + insn.y_size, insn.x_pad0:insn.x_pad0 + insn.x_size] = data
        sram[insn.sram_base:insn.sram_base + n] = block.reshape((n,) + sram.shape[1:])
        return [fp]

    def _gemm(self, insn: GemmInsn) -> list[Footprint]:
        dst, src, wgt = self._loop_index(insn)
        if dst.size == 0:
            return []
        self._check(dst, len(self.acc), "GEMM accumulator")
        fps = [Footprint("uop", insn.uop_bgn, insn.uop_end - 1, False),
               Footprint("acc", int(dst.min()), int(dst.max()), True)]
        if insn.reset:
            self.acc[dst] = 0
            self.out[dst] = 0
            return fps
        self._check(src, len(self.inp), "GEMM input")
        self._check(wgt, len(self.wgt), "GEMM weight")
        fps += [Footprint("inp", int(src.min()), int(src.max()), False),
                Footprint("wgt", int(wgt.min()), int(wgt.max()), False)]
        # products of int8 summed over 16 lanes stay below 2**19: exact in float32 (BLAS-batched)
        prod = np.matmul(self.wgt[wgt].astype(np.float32), self.inp[src].astype(np.float32)[:, :, None])[:, :, 0]
        order = np.argsort(dst, kind="stable")
        ds = dst[order]
        starts = np.flatnonzero(np.r_[True, ds[1:] != ds[:-1]])
        sums = np.add.reduceat(prod[order].astype(np.int64), starts, axis=0)
        uniq = ds[starts]
        res = _wrap32(self.acc[uniq].astype(np.int64) + sums)
        self.acc[uniq] = res
        self.out[uniq] = res.astype(np.int8)
        return fps

    def _alu(self, insn: AluInsn) -> list[Footprint]:
        dst, src, _ = self._loop_index(insn)
        if dst.size == 0:
            return []
        self._check(dst, len(self.acc), "ALU destination")
        fps = [Footprint("uop", insn.uop_bgn, insn.uop_end - 1, False),
               Footprint("acc", int(dst.min()), int(dst.max()), True)]
        if not insn.use_imm:
            self._check(src, len(self.acc), "ALU source")
            fps.append(Footprint("acc", int(src.min()), int(src.max()), False))
        independent = (np.unique(dst).size == dst.size
                       and (insn.use_imm or np.array_equal(src, dst) or np.intersect1d(src, dst).size == 0))
        if independent:
            b = np.full((dst.size, 1), insn.imm, np.int64) if insn.use_imm else self.acc[src].astype(np.int64)
            res = self._alu_op(insn.alu_op, self.acc[dst].astype(np.int64), b)
            self.acc[dst] = res
            self.out[dst] = res.astype(np.int8)
        else:  # order-dependent loop nest: execute it sequentially, one vector at a time
            for d, s in zip(dst.tolist(), src.tolist()):
                b = np.full((1,), insn.imm, np.int64) if insn.use_imm else self.acc[s].astype(np.int64)
                r = self._alu_op(insn.alu_op, self.acc[d].astype(np.int64), b)
                self.acc[d] = r
                self.out[d] = r.astype(np.int8)
        return fps

    @staticmethod
    def _alu_op(op: AluOp, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if op == AluOp.MIN:
            r = np.minimum(a, b)
        elif op == AluOp.MAX:
            r = np.maximum(a, b)
        elif op == AluOp.ADD:
            r = a + b
        else:
            r = _shift(a, np.broadcast_to(b, a.shape))
        return _wrap32(r)

    def run(self, insns: Sequence[Insn]) -> list[list[Footprint]]:
        """Execute ``insns`` in program order; the footprint of each."""
        return [self.execute(i) for i in insns]


def check_hazards(insns: Sequence[Insn], footprints: Sequence[Sequence[Footprint]],
                  start: np.ndarray, end: np.ndarray) -> None:
    """Raise :class:`SimulationError` if two modules touch one SRAM range at overlapping times (one writing)."""
    order = np.argsort(start, kind="stable")
    active: list[int] = []
    for idx in order.tolist():
        s = start[idx]
        active = [a for a in active if end[a] > s]
        for a in active:
            if insns[a].module == insns[idx].module:
                continue
            for fa in footprints[a]:
                for fb in footprints[idx]:
                    if fa.buffer == fb.buffer and (fa.write or fb.write) and fa.lo <= fb.hi and fb.lo <= fa.hi:
                        raise SimulationError(
                            f"hazard: instruction #{a} ({insns[a].opcode.name}) and #{idx} ({insns[idx].opcode.name}) "
                            f"overlap in time on {fa.buffer}[{max(fa.lo, fb.lo)}..{min(fa.hi, fb.hi)}]")
        active.append(idx)
