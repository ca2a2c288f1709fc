"""A general CNN (:class:`~edgeprune.vta.cnn.CnnNet`) on VTA: kernels for the accelerator layers, host steps, DMA costs.

* An accelerator layer becomes one kernel, or, when grouped (depthwise), one kernel per range of
  output channel blocks that reads one range of input channel blocks: only the diagonal blocks of
  the block-diagonal weight are loaded and multiplied.  The ranges are addressed inside the
  blocked ``(C/16, H, W, 16)`` tensors, so no copy is needed.
* A host step reads its inputs from DRAM and writes its output back: each direction costs
  ``dram_latency`` + ``ceil(bytes / AXI bytes per cycle)`` cycles in the cycle report (the host's
  own compute time is not modelled: it runs on the board's ARM core, not on VTA).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from edgeprune.vta.cnn import CnnNet, HostOp, run_host_op
from edgeprune.vta.compiler import (
    Addresses,
    Kernel,
    block_activation,
    choose_plan,
    emit_kernel,
    unblock_activation,
)
from edgeprune.vta.config import VTAConfig
from edgeprune.vta.functional import Machine, check_hazards
from edgeprune.vta.isa import encode_stream
from edgeprune.vta.program import DramLayout, TensorInfo, kernel_listing, layer_geom
from edgeprune.vta.quantize import QLayer, host_quantise_input
from edgeprune.vta.timing import TimingResult, simulate_timing


@dataclass
class Unit:
    """One kernel's slice of a layer: output channel blocks [o0, o1) from input channel blocks [i0, i1)."""

    layer: QLayer
    o0: int
    o1: int
    i0: int
    i1: int

    def sliced(self, block: int) -> QLayer:
        """The layer restricted to this slice (channels of the slice only)."""
        ly = self.layer
        oc = slice(self.o0 * block, min(ly.out_channels, self.o1 * block))
        ic = slice(self.i0 * block, min(ly.in_channels, self.i1 * block))
        return QLayer(f"{ly.name}" if (self.o0, self.i0) == (0, 0) and self.o1 * block >= ly.out_channels
                      and self.i1 * block >= ly.in_channels else f"{ly.name}[o{self.o0}:{self.o1},i{self.i0}:{self.i1}]",
                      ly.kind, ly.weight[oc, ic], ly.bias[oc], ly.shift[oc], ly.stride, ly.padding, ly.relu, ly.input,
                      ly.output, ly.residual, None if ly.res_shift is None else ly.res_shift[oc], ly.in_frac, ly.out_frac,
                      ly.w_frac[oc] if ly.w_frac.size else ly.w_frac, ly.clip, ly.clip_hi, ly.groups)


def block_ranges(out_channels: int, in_channels: int, groups: int, block: int) -> list[tuple[int, int, int, int]]:
    """``(o0, o1, i0, i1)`` channel-block ranges of a grouped conv: output blocks [o0, o1) read input blocks [i0, i1)."""
    o, i = out_channels, in_channels
    ob = -(-o // block)
    if groups == 1:
        return [(0, ob, 0, -(-i // block))]
    og, ig = o // groups, i // groups
    out: list[list[int]] = []
    for a in range(ob):
        g0, g1 = (a * block) // og, (min(o, (a + 1) * block) - 1) // og
        i0, i1 = (g0 * ig) // block, -(-((g1 + 1) * ig) // block)
        if out and (out[-1][2], out[-1][3]) == (i0, i1):
            out[-1][1] = a + 1
        else:
            out.append([a, a + 1, i0, i1])
    return [(a, b, c, d) for a, b, c, d in out]


def units(layer: QLayer, block: int) -> list[Unit]:
    """Split a (grouped) layer into kernels over the channel blocks its block-diagonal weight really connects."""
    return [Unit(layer, *r) for r in block_ranges(layer.out_channels, layer.in_channels, layer.groups, block)]


@dataclass
class Step:
    """One step of the program: a VTA layer (its kernels) or a host op (its DMA cost)."""

    where: str  # "vta" | "host"
    name: str
    layer: QLayer | None = None
    host: HostOp | None = None
    kernels: list[Kernel] = field(default_factory=list)
    timings: list[TimingResult] = field(default_factory=list)
    dma_bytes: int = 0
    dma_cycles: int = 0

    @property
    def cycles(self) -> int:
        """Simulated cycles (kernels) or DMA cycles (host)."""
        return sum(t.cycles for t in self.timings) + self.dma_cycles


@dataclass
class CnnProgram:
    """The compiled network: steps in order, the DRAM map and the constant image."""

    config: VTAConfig
    net: CnnNet
    steps: list[Step]
    tensors: dict[str, TensorInfo]
    const_image: np.ndarray
    dram_bytes: int
    input_dma: tuple[int, int]  # (bytes, cycles) of writing the quantised input to DRAM
    regions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def kernels(self) -> list[Kernel]:
        """Every VTA kernel in order."""
        return [k for s in self.steps for k in s.kernels]

    @property
    def timings(self) -> list[TimingResult]:
        """Every kernel's timing in order."""
        return [t for s in self.steps for t in s.timings]

    @property
    def const_bytes(self) -> int:
        """Bytes of weights, vectors and micro-ops."""
        return int(self.const_image.size)

    @property
    def cycles(self) -> int:
        """Total: kernels plus host DMA transfers plus the input transfer."""
        return sum(s.cycles for s in self.steps) + self.input_dma[1]

    def binary(self) -> bytes:
        """The instruction stream: every kernel's 128-bit instructions, each ending in FINISH."""
        return b"".join(encode_stream(k.insns, self.config) for k in self.kernels)

    def listing(self) -> str:
        """Readable listing: host steps and kernels in order."""
        cfg = self.config
        lines = [
            "# VTA instruction stream (cycle-approximate simulation of the VTA architecture; not RTL, not hardware)",
            f"# board {cfg.board}: {cfg.block}x{cfg.block} int8 GEMM core, {cfg.clock_mhz:g} MHz, {cfg.axi_bytes * 8}-bit AXI",
            (f"# host: quantise the input to int8 (frac {self.net.input_frac}) -> tensor 'input' @ "
             f"{self.tensors['input'].addr:#x}; DMA {self.input_dma[0]} B, {self.input_dma[1]} cycles"),
        ]
        pc = 0
        for s in self.steps:
            if s.where == "host":
                assert s.host is not None
                lines.append(f"\n# host: {s.name}: {s.host.what}: {', '.join(s.host.inputs)} -> {s.host.output}; "
                             f"DMA {s.dma_bytes} B, {s.dma_cycles} cycles")
                continue
            for k, tr in zip(s.kernels, s.timings):
                assert s.layer is not None
                pc = kernel_listing(lines, k, s.layer, tr, pc)
        return "\n".join(lines) + "\n"


def dma_cycles(nbytes: int, config: VTAConfig) -> int:
    """Cycles of one host<->DRAM transfer of ``nbytes`` over the board's AXI port."""
    return config.dram_latency + -(-nbytes // config.axi_bytes) if nbytes else 0


def compile_cnn(net: CnnNet, config: VTAConfig) -> CnnProgram:
    """Plan, place and emit every accelerator layer of ``net``; price the host steps' DMA transfers."""
    b = config.block
    dram = DramLayout()
    planned: list[list[tuple[QLayer, Unit, Any, Any, tuple[int, int, int]]]] = []
    for step in net.steps:
        if not isinstance(step, QLayer):
            planned.append([])
            continue
        row = []
        for u in units(step, b):
            sl = u.sliced(b)
            g = layer_geom(sl, net.shapes[step.input][1:])
            plan = choose_plan(g, config)[0]
            probe = emit_kernel(g, plan, Addresses(), config)
            row.append((sl, u, g, plan, dram.constants(sl, g.uses_vec, probe.uops, b)))
        planned.append(row)
    tensors, image = dram.place_tensors(net.shapes, b)
    steps: list[Step] = []
    for step, row in zip(net.steps, planned):
        if isinstance(step, HostOp):
            nbytes = sum(tensors[i].nbytes for i in step.inputs) + tensors[step.output].nbytes
            cyc = sum(dma_cycles(tensors[i].nbytes, config) for i in step.inputs) + dma_cycles(tensors[step.output].nbytes, config)
            steps.append(Step("host", step.name, host=step, dma_bytes=nbytes, dma_cycles=cyc))
            continue
        s = Step("vta", step.name, layer=step)
        t_in, t_out = tensors[step.input], tensors[step.output]
        for sl, u, g, plan, (wa, va, ua) in row:
            addr = Addresses(inp=t_in.addr + u.i0 * b * t_in.h * t_in.w, out=t_out.addr + u.o0 * b * t_out.h * t_out.w,
                             res=(tensors[step.residual].addr + u.o0 * b * t_out.h * t_out.w) if step.residual else 0,
                             wgt=wa, vec=va, uop=ua)
            k = emit_kernel(g, plan, addr, config)
            k.name = sl.name
            s.kernels.append(k)
            s.timings.append(simulate_timing(k.insns, config))
        steps.append(s)
    nin = tensors["input"].nbytes
    return CnnProgram(config, net, steps, tensors, image, dram.pos, (nin, dma_cycles(nin, config)), dram.regions)


def run_cnn_program(program: CnnProgram, x: torch.Tensor | np.ndarray, quantised: bool = False,
                    check: bool = True) -> dict[str, np.ndarray]:
    """Run one image through the kernels (functional simulation) and the host steps; every tensor read back from DRAM."""
    cfg = program.config
    xq = np.asarray(x, np.int8) if quantised else host_quantise_input(x, program.net.input_frac)
    if xq.ndim != 4 or xq.shape[0] != 1:
        raise ValueError("run_cnn_program simulates batch 1: give a 1 x C x H x W input")
    m = Machine(cfg, program.dram_bytes)
    m.dram[:program.const_bytes] = program.const_image
    m.write_dram(program.tensors["input"].addr, block_activation(xq[0], cfg.block))

    def read(name: str) -> np.ndarray:
        t = program.tensors[name]
        return unblock_activation(m.read_dram(t.addr, t.blocked_shape, np.int8), t.channels)[None]

    for s in program.steps:
        if s.where == "host":
            assert s.host is not None
            out = run_host_op(program.net, s.host, [read(i) for i in s.host.inputs])
            m.write_dram(program.tensors[s.host.output].addr, block_activation(out[0], cfg.block))
            continue
        for k, tr in zip(s.kernels, s.timings):
            fps = m.run(k.insns)
            if check:
                check_hazards(k.insns, fps, tr.start, tr.end)
    return {name: read(name) for name in program.tensors}


__all__ = ["CnnProgram", "Step", "Unit", "block_ranges", "compile_cnn", "dma_cycles", "run_cnn_program", "units"]
