"""Cycle-approximate timing of a VTA instruction stream (not RTL; docs/vta.md lists the assumptions).

Four modules run concurrently: *fetch* reads 128-bit instructions from DRAM
and dispatches them, in program order, into the load, compute and store
command queues (``cmd_queue_depth`` deep; a full queue stalls fetch).  Each
module executes its queue in order.  An instruction starts when its module is
free, it has been dispatched, and every token it pops is available; it pushes
its tokens when it ends.  Token queues: ``l2c`` (load -> compute), ``c2l``
(compute -> load), ``c2s`` (compute -> store), ``s2c`` (store -> compute).

Per-instruction costs (cycles):

* LOAD/STORE: ``dram_latency`` + max(ceil(bytes / axi_bytes), SRAM entries written incl. padding)
  + ``burst_overhead`` per extra row of a 2-D transfer;
* GEMM: one BATCH x BLOCK x BLOCK block-matmul (or one reset) per cycle + ``gemm_fill``;
* ALU: ``alu_ii`` cycles per vector op + ``alu_fill``;
* FINISH: 1; fetch: ceil(16 / axi_bytes) per instruction after one ``dram_latency``.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeprune.errors import VerificationFailed
from edgeprune.vta.config import VTAConfig
from edgeprune.vta.isa import AluInsn, GemmInsn, Insn, MemInsn, MemType, Module, Opcode

QUEUES = ("l2c", "c2l", "c2s", "s2c")
MODULES = ("load", "compute", "store")


class Deadlock(VerificationFailed):
    """The dependency tokens of a stream can never all be satisfied."""


def token_ops(insn: Insn) -> tuple[list[str], list[str]]:
    """(queues popped, queues pushed) by ``insn`` given its module."""
    d, m = insn.deps, insn.module
    pops: list[str] = []
    pushes: list[str] = []
    if m == Module.LOAD:
        if d.pop_prev or d.push_prev:
            raise Deadlock(f"load-module instruction uses a 'prev' dependency: {insn}")
        pops += ["c2l"] if d.pop_next else []
        pushes += ["l2c"] if d.push_next else []
    elif m == Module.COMPUTE:
        pops += (["l2c"] if d.pop_prev else []) + (["s2c"] if d.pop_next else [])
        pushes += (["c2l"] if d.push_prev else []) + (["c2s"] if d.push_next else [])
    else:
        if d.pop_next or d.push_next:
            raise Deadlock(f"store-module instruction uses a 'next' dependency: {insn}")
        pops += ["c2s"] if d.pop_prev else []
        pushes += ["s2c"] if d.push_prev else []
    return pops, pushes


def elem_bytes(mem_type: MemType, config: VTAConfig) -> int:
    """DRAM bytes of one entry of ``mem_type``."""
    return {MemType.UOP: config.uop_elem_bytes, MemType.WGT: config.wgt_elem_bytes, MemType.INP: config.inp_elem_bytes,
            MemType.ACC: config.acc_elem_bytes, MemType.OUT: config.out_elem_bytes,
            MemType.ACC_8BIT: config.inp_elem_bytes}[mem_type]


def insn_dram_bytes(insn: Insn, config: VTAConfig) -> int:
    """DRAM bytes a LOAD/STORE moves (0 for others)."""
    if isinstance(insn, MemInsn):
        return insn.y_size * insn.x_size * elem_bytes(insn.mem_type, config)
    return 0


def insn_cost(insn: Insn, config: VTAConfig) -> int:
    """Cycles ``insn`` occupies its module."""
    if isinstance(insn, MemInsn):
        nbytes = insn_dram_bytes(insn, config)
        entries = insn.sram_entries
        rows = max(insn.y_size, 1)
        return config.dram_latency + max(-(-nbytes // config.axi_bytes), entries) + (rows - 1) * config.burst_overhead
    if isinstance(insn, GemmInsn):
        return insn.ops + config.gemm_fill
    if isinstance(insn, AluInsn):
        return insn.ops * config.alu_ii + config.alu_fill
    return 1


@dataclass
class TimingResult:
    """Cycles and traffic of one instruction stream."""

    cycles: int
    start: np.ndarray
    end: np.ndarray
    busy: dict[str, int]
    stalls: dict[str, dict[str, int]]
    dram_read: int
    dram_write: int
    insn_count: int
    gemm_ops: int
    alu_ops: int
    max_tokens: dict[str, int] = field(default_factory=dict)

    @property
    def dram_bytes(self) -> int:
        """Bytes read + written (instruction fetch included)."""
        return self.dram_read + self.dram_write

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary."""
        return {
            "cycles": self.cycles,
            "busy_cycles": dict(self.busy),
            "utilisation": {m: round(b / self.cycles, 4) if self.cycles else 0.0 for m, b in self.busy.items()},
            "stall_cycles": {m: dict(s) for m, s in self.stalls.items()},
            "dram_read_bytes": self.dram_read,
            "dram_write_bytes": self.dram_write,
            "instructions": self.insn_count,
            "gemm_block_ops": self.gemm_ops,
            "alu_vector_ops": self.alu_ops,
            "max_tokens_queued": dict(self.max_tokens),
        }


def simulate_timing(insns: Sequence[Insn], config: VTAConfig) -> TimingResult:
    """Run the stream through the fetch/load/compute/store pipeline model; raises :class:`Deadlock`."""
    n = len(insns)
    module_of = [int(i.module) for i in insns]
    lists: list[list[int]] = [[], [], []]
    pos_in_list = [0] * n
    for idx, m in enumerate(module_of):
        pos_in_list[idx] = len(lists[m])
        lists[m].append(idx)
    tokens = [token_ops(i) for i in insns]
    cost = [insn_cost(i, config) for i in insns]
    start = np.full(n, -1, np.int64)
    end = np.full(n, -1, np.int64)
    dispatch = np.full(n, -1, np.int64)
    queues: dict[str, deque[int]] = {q: deque() for q in QUEUES}
    max_tokens = {q: 0 for q in QUEUES}
    fetch_cost = -(-config.insn_bytes // config.axi_bytes)
    fetch_t = config.dram_latency
    fetch_ptr = 0
    ptr = [0, 0, 0]
    free = [0, 0, 0]
    busy = [0, 0, 0]
    stalls: list[dict[str, int]] = [{}, {}, {}]
    fetch_stall = 0
    depth = config.cmd_queue_depth
    done = 0
    while done < n:
        progress = False
        while fetch_ptr < n:
            m = module_of[fetch_ptr]
            p = pos_in_list[fetch_ptr]
            t = fetch_t
            if p >= depth:
                older = lists[m][p - depth]
                if start[older] < 0:
                    break
                if start[older] > t:
                    fetch_stall += int(start[older] - t)
                    t = int(start[older])
            fetch_t = t + fetch_cost
            dispatch[fetch_ptr] = fetch_t
            fetch_ptr += 1
            progress = True
        for m in range(3):
            lst = lists[m]
            while ptr[m] < len(lst):
                idx = lst[ptr[m]]
                if dispatch[idx] < 0:
                    break
                pops, pushes = tokens[idx]
                if any(not queues[q] for q in pops):
                    break
                t0 = free[m]
                cause, when = "fetch", int(dispatch[idx])
                for q in pops:
                    tq = queues[q][0]
                    if tq > when:
                        cause, when = f"wait_{q}", tq
                s = max(t0, when)
                if s > t0:
                    stalls[m][cause] = stalls[m].get(cause, 0) + (s - t0)
                for q in pops:
                    queues[q].popleft()
                e = s + cost[idx]
                start[idx], end[idx] = s, e
                for q in pushes:
                    queues[q].append(e)
                    max_tokens[q] = max(max_tokens[q], len(queues[q]))
                free[m] = e
                busy[m] += cost[idx]
                ptr[m] += 1
                done += 1
                progress = True
        if not progress:
            stuck = []
            for m in range(3):
                if ptr[m] < len(lists[m]):
                    idx = lists[m][ptr[m]]
                    pops, _ = tokens[idx]
                    missing = [q for q in pops if not queues[q]]
                    stuck.append(f"{MODULES[m]} at #{idx} waits on {','.join(missing) or 'fetch'}")
            raise Deadlock("VTA dependency deadlock: " + "; ".join(stuck))
    cycles = int(end.max()) if n else 0
    leftover = {q: len(v) for q, v in queues.items() if v}
    if leftover:
        raise Deadlock(f"unbalanced dependency tokens left at the end of the stream: {leftover}")
    dram_read = sum(insn_dram_bytes(i, config) for i in insns if i.opcode == Opcode.LOAD) + n * config.insn_bytes
    dram_write = sum(insn_dram_bytes(i, config) for i in insns if i.opcode == Opcode.STORE)
    st = {MODULES[m]: stalls[m] for m in range(3)}
    st["fetch"] = {"cmd_queue_full": fetch_stall}
    return TimingResult(
        cycles=cycles,
        start=start,
        end=end,
        busy={MODULES[m]: busy[m] for m in range(3)} | {"fetch": n * fetch_cost + config.dram_latency},
        stalls=st,
        dram_read=dram_read,
        dram_write=dram_write,
        insn_count=n,
        gemm_ops=sum(i.ops for i in insns if isinstance(i, GemmInsn) and not i.reset),
        alu_ops=sum(i.ops for i in insns if isinstance(i, AluInsn)),
        max_tokens=max_tokens,
    )
