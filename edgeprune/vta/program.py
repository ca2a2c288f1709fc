"""A whole network on VTA: DRAM map, one kernel per layer, host steps, and running it functionally.

Host steps (documented in docs/vta.md): quantising the float input to int8,
and the global average pooling before the dense head (integer mean, rounded
half-up).  Everything else (convolutions, shortcut selections, residual adds,
ReLU, requantisation, the dense layer) runs as VTA instructions.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from edgeprune.vta.compiler import (
    Addresses,
    Kernel,
    LayerGeom,
    align,
    block_activation,
    block_vectors,
    block_weights,
    choose_plan,
    emit_kernel,
    unblock_activation,
)
from edgeprune.vta.config import VTAConfig
from edgeprune.vta.functional import Machine, check_hazards
from edgeprune.vta.isa import encode_stream, format_insn
from edgeprune.vta.quantize import QLayer, QNet, host_avgpool, host_quantise_input
from edgeprune.vta.timing import TimingResult, simulate_timing


@dataclass(frozen=True)
class TensorInfo:
    """An activation tensor in DRAM, blocked (C/16, H, W, 16) int8."""

    name: str
    channels: int
    h: int
    w: int
    addr: int
    block: int = 16

    @property
    def nbytes(self) -> int:
        """Bytes it occupies in DRAM."""
        return -(-self.channels // self.block) * self.block * self.h * self.w

    @property
    def blocked_shape(self) -> tuple[int, int, int, int]:
        """(C/16, H, W, 16)."""
        return (-(-self.channels // self.block), self.h, self.w, self.block)


@dataclass
class Program:
    """The compiled network: kernels in execution order, the DRAM map and the constant image."""

    config: VTAConfig
    qnet: QNet
    kernels: list[Kernel]
    layers: list[QLayer]
    tensors: dict[str, TensorInfo]
    const_image: np.ndarray  # uint8: weights, vectors and micro-ops, DRAM bytes [0, const_bytes)
    dram_bytes: int
    timings: list[TimingResult] = field(default_factory=list)
    regions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def const_bytes(self) -> int:
        """Bytes of weights, vectors and micro-ops."""
        return int(self.const_image.size)

    def binary(self) -> bytes:
        """The instruction stream: every kernel's 128-bit instructions, each kernel ending in FINISH."""
        return b"".join(encode_stream(k.insns, self.config) for k in self.kernels)

    def listing(self) -> str:
        """A readable listing of the whole stream, with host steps and per-kernel headers."""
        lines = [
            "# VTA instruction stream (cycle-approximate simulation of the VTA architecture; not RTL, not hardware)",
            (f"# board {self.config.board}: {self.config.block}x{self.config.block} int8 GEMM core, "
             f"{self.config.clock_mhz:g} MHz, {self.config.axi_bytes * 8}-bit AXI"),
            (f"# host: quantise the input to int8 (frac {self.qnet.input_frac}) -> tensor 'input' @ "
             f"{self.tensors['input'].addr:#x}"),
        ]
        pc = 0
        for k, layer, tr in zip(self.kernels, self.layers, self.timings):
            if layer.input == "pool":
                lines.append(f"# host: average-pool '{self.qnet.pool_input}' -> 'pool' @ {self.tensors['pool'].addr:#x}")
            pc = kernel_listing(lines, k, layer, tr, pc)
        return "\n".join(lines) + "\n"


def kernel_listing(lines: list[str], k: Kernel, layer: Any, tr: TimingResult, pc: int) -> int:
    """Append a kernel's header and its numbered instructions (from ``pc``) to ``lines``; the next ``pc``."""
    lines.append(f"\n# kernel {k.name}: {layer.input} -> {layer.output}"
                 f"{' (+ residual ' + layer.residual + ')' if layer.residual else ''}; {k.plan.describe()}; "
                 f"{len(k.insns)} instructions, {len(k.uops)} micro-ops, {tr.cycles} cycles")
    for insn in k.insns:
        lines.append(f"{pc:6d}  {format_insn(insn)}")
        pc += 1
    return pc


def layer_geom(layer: QLayer, in_hw: tuple[int, int]) -> LayerGeom:
    """The lowering parameters of a quantised layer."""

    def mode(v: np.ndarray | None) -> tuple[str, int]:
        if v is None or not np.any(v != 0):
            return "none", 0
        if np.all(v == v[0]):
            return "imm", int(v[0])
        return "vec", 0

    sm, si = mode(layer.shift)
    rm, ri = mode(layer.res_shift) if layer.residual else ("none", 0)
    return LayerGeom(layer.name, layer.in_channels, layer.out_channels, in_hw[0], in_hw[1], layer.kernel,
                     layer.stride, layer.padding, relu=layer.relu, clip=layer.clip, residual=layer.residual is not None,
                     bias=layer.need_bias, shift=sm, shift_imm=si, res_shift=rm, res_shift_imm=ri,
                     clip_hi=layer.clip_hi)


@dataclass
class DramLayout:
    """Where a program's data sits in DRAM: layer constants (weights, vectors, uops) first, then the
    activation tensors, each region aligned; ``regions`` lists them for the report."""

    pos: int = 0
    chunks: list[tuple[int, np.ndarray]] = field(default_factory=list)
    regions: list[dict[str, Any]] = field(default_factory=list)

    def place(self, name: str, data: np.ndarray) -> int:
        """Append ``data`` (as bytes) at the next aligned address; return that address."""
        addr = self.pos
        raw = np.ascontiguousarray(data).view(np.uint8).ravel()
        self.chunks.append((addr, raw))
        self.regions.append({"name": name, "addr": addr, "bytes": int(raw.size)})
        self.pos = align(self.pos + raw.size)
        return addr

    def constants(self, layer: QLayer, uses_vec: bool, uops: np.ndarray, block: int) -> tuple[int, int, int]:
        """Place one layer's blocked weights, its vectors (when the kernel reads them) and its uops."""
        wa = self.place(f"{layer.name}.weight", block_weights(layer.weight, block))
        va = self.place(f"{layer.name}.vectors", block_vectors(layer.bias, layer.shift, layer.res_shift, block)) \
            if uses_vec else 0
        ua = self.place(f"{layer.name}.uops", uops)
        return wa, va, ua

    def place_tensors(self, shapes: dict[str, tuple[int, int, int]], block: int) -> tuple[dict[str, TensorInfo], np.ndarray]:
        """Place the activation tensors after the constants; return them and the DRAM image of the constants."""
        const_end = self.pos
        tensors: dict[str, TensorInfo] = {}
        for name, (c, h, w) in shapes.items():
            tensors[name] = TensorInfo(name, c, h, w, self.pos, block)
            self.regions.append({"name": f"tensor {name}", "addr": self.pos, "bytes": tensors[name].nbytes})
            self.pos = align(self.pos + tensors[name].nbytes)
        image = np.zeros(const_end, np.uint8)
        for addr, raw in self.chunks:
            image[addr:addr + raw.size] = raw
        return tensors, image


def compile_qnet(qnet: QNet, config: VTAConfig) -> Program:
    """Plan, place and emit every layer of ``qnet``; raises DoesNotFit when a layer cannot be tiled."""
    geoms = [layer_geom(layer, qnet.shapes[layer.input][1:]) for layer in qnet.layers]
    plans = [choose_plan(g, config)[0] for g in geoms]
    probe = [emit_kernel(g, p, Addresses(), config) for g, p in zip(geoms, plans)]
    dram = DramLayout()
    const_addr = [dram.constants(layer, g.uses_vec, k.uops, config.block) for layer, g, k in zip(qnet.layers, geoms, probe)]
    tensors, image = dram.place_tensors(qnet.shapes, config.block)
    kernels, timings = [], []
    for layer, g, p, (wa, va, ua) in zip(qnet.layers, geoms, plans, const_addr):
        addr = Addresses(inp=tensors[layer.input].addr, out=tensors[layer.output].addr,
                         res=tensors[layer.residual].addr if layer.residual else 0, wgt=wa, vec=va, uop=ua)
        k = emit_kernel(g, p, addr, config)
        kernels.append(k)
        timings.append(simulate_timing(k.insns, config))
    return Program(config, qnet, kernels, list(qnet.layers), tensors, image, dram.pos, timings, dram.regions)


def run_program(program: Program, x: torch.Tensor | np.ndarray, quantised: bool = False,
                check: bool = True) -> dict[str, np.ndarray]:
    """Run one image (float 1xCxHxW, or int8 if ``quantised``) through the instruction stream.

    Returns every tensor (int8, N=1, NCHW) read back from the simulated DRAM.
    With ``check``, also verifies the overlapped schedule of each kernel is free of SRAM hazards.
    """
    cfg = program.config
    xq = np.asarray(x, np.int8) if quantised else host_quantise_input(x, program.qnet.input_frac)
    if xq.ndim != 4 or xq.shape[0] != 1:
        raise ValueError("run_program simulates batch 1: give a 1 x C x H x W input")
    m = Machine(cfg, program.dram_bytes)
    m.dram[:program.const_bytes] = program.const_image
    t_in = program.tensors["input"]
    m.write_dram(t_in.addr, block_activation(xq[0], cfg.block))

    def read(name: str) -> np.ndarray:
        t = program.tensors[name]
        return unblock_activation(m.read_dram(t.addr, t.blocked_shape, np.int8), t.channels)[None]

    for k, layer, tr in zip(program.kernels, program.layers, program.timings):
        if layer.input == "pool":
            pooled = host_avgpool(read(program.qnet.pool_input))
            m.write_dram(program.tensors["pool"].addr, block_activation(pooled[0], cfg.block))
        fps = m.run(k.insns)
        if check:
            check_hazards(k.insns, fps, tr.start, tr.end)
    return {name: read(name) for name in program.tensors}


def run_layer(layer: QLayer, x: np.ndarray, residual: np.ndarray | None, config: VTAConfig,
              check: bool = True) -> tuple[np.ndarray, Kernel, TimingResult]:
    """Compile and simulate one quantised layer on its own: int8 (1, I, H, W) -> int8 (1, O, OH, OW).

    Used to check each layer bit for bit against :func:`~edgeprune.vta.quantize.reference_layer`.
    """
    _, ci, h, w = x.shape
    g = layer_geom(layer, (h, w))
    plan, _ = choose_plan(g, config)
    oh, ow = g.out_hw
    pos = 0
    places: dict[str, int] = {}

    def take(name: str, nbytes: int) -> int:
        nonlocal pos
        places[name] = pos
        pos = align(pos + nbytes)
        return places[name]

    wgt = block_weights(layer.weight, config.block)
    vec = block_vectors(layer.bias, layer.shift, layer.res_shift, config.block)
    probe = emit_kernel(g, plan, Addresses(), config)
    b = config.block
    addr = Addresses(inp=take("inp", -(-ci // b) * b * h * w), out=take("out", -(-layer.out_channels // b) * b * oh * ow),
                     res=take("res", -(-layer.out_channels // b) * b * oh * ow) if residual is not None else 0,
                     wgt=take("wgt", wgt.nbytes), vec=take("vec", vec.nbytes), uop=take("uop", probe.uops.nbytes))
    k = emit_kernel(g, plan, addr, config)
    tr = simulate_timing(k.insns, config)
    m = Machine(config, pos)
    m.write_dram(addr.inp, block_activation(x[0], b))
    if residual is not None:
        m.write_dram(addr.res, block_activation(residual[0], b))
    m.write_dram(addr.wgt, wgt)
    m.write_dram(addr.vec, vec)
    m.write_dram(addr.uop, k.uops)
    fps = m.run(k.insns)
    if check:
        check_hazards(k.insns, fps, tr.start, tr.end)
    ob = -(-layer.out_channels // b)
    out = unblock_activation(m.read_dram(addr.out, (ob, oh, ow, b), np.int8), layer.out_channels)
    return out[None], k, tr
