"""Lower int8 conv2d / dense layers to VTA instructions, tiled under the SRAM sizes.

Data layouts (VTA's blocked layouts, BLOCK = 16):

* activations in DRAM: ``(C/16, H, W, 16)`` int8, one input/output entry per pixel and channel block;
* weights: ``(O/16, I/16, KH, KW, 16o, 16i)`` int8, one weight entry per (out block, in block, tap);
* per-layer vectors: ``(O/16, 3, 16)`` int32 accumulator entries: bias, shift, residual shift;
* channels are zero-padded to multiples of 16 (the padding costs real GEMM cycles and bytes).

A layer is one *kernel* (one launch ending in FINISH, as TVM's VTA runtime
runs one operator per launch).  Its output is cut into tiles of
``oc_tile`` channel blocks x ``th`` rows x ``tw`` columns (the im2col-free
schedule: the input tile, with its halo and zero padding, is loaded once and
the 3x3 taps are micro-ops).  With two virtual threads the SRAMs are split in
halves and tiles alternate between them, so the load of tile t+1 and the
store of tile t-1 overlap the compute of tile t; dependency tokens guard
every buffer reuse.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from edgeprune.errors import BudgetMissed
from edgeprune.vta.config import VTAConfig
from edgeprune.vta.isa import (
    AluInsn,
    AluOp,
    Deps,
    FinishInsn,
    GemmInsn,
    Insn,
    MemInsn,
    MemType,
    Opcode,
    pack_uops,
)


class DoesNotFit(BudgetMissed):
    """A layer cannot be tiled into the accelerator's SRAM (exit code 1)."""


@dataclass(frozen=True)
class LayerGeom:
    """What the lowering of one layer depends on (shapes and which ALU steps it needs)."""

    name: str
    in_channels: int
    out_channels: int
    h: int
    w: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    relu: bool = True
    clip: bool = True
    residual: bool = False
    bias: bool = True
    shift: str = "vec"  # "vec" (per channel), "imm" (one value), "none"
    shift_imm: int = 0
    res_shift: str = "none"  # same choices, for the residual
    res_shift_imm: int = 0
    clip_hi: int = 127  # MIN immediate of the final clamp (ReLU6 clamps lower)

    @property
    def out_hw(self) -> tuple[int, int]:
        """(OH, OW)."""
        return ((self.h + 2 * self.padding[0] - self.kernel[0]) // self.stride[0] + 1,
                (self.w + 2 * self.padding[1] - self.kernel[1]) // self.stride[1] + 1)

    def blocks(self, config: VTAConfig) -> tuple[int, int]:
        """(input channel blocks, output channel blocks)."""
        b = config.block
        return -(-self.in_channels // b), -(-self.out_channels // b)

    @property
    def uses_vec(self) -> bool:
        """Whether the per-channel vector entries are loaded."""
        return self.bias or self.shift == "vec" or self.res_shift == "vec"

    @property
    def alu_ops_per_vector(self) -> int:
        """ALU vector operations per output entry."""
        n = int(self.residual and self.res_shift != "none") + int(self.bias) + int(self.shift != "none")
        n += int(self.relu or self.clip) + int(self.clip)
        return n


@dataclass(frozen=True)
class TilePlan:
    """A tiling: virtual threads, output tile (channel blocks x rows x columns)."""

    vthreads: int
    oc_tile: int
    th: int
    tw: int

    def describe(self) -> str:
        """Short text."""
        return f"vt={self.vthreads} tile={self.oc_tile}x{self.th}x{self.tw}"


@dataclass(frozen=True)
class Addresses:
    """DRAM byte addresses a kernel refers to."""

    inp: int = 0
    out: int = 0
    res: int = 0
    wgt: int = 0
    vec: int = 0
    uop: int = 0


@dataclass
class Kernel:
    """One layer's instruction stream and everything the simulators and the report need."""

    name: str
    geom: LayerGeom
    plan: TilePlan
    insns: list[Insn]
    uops: np.ndarray  # uint32 words, loaded from ``addr.uop``
    addr: Addresses
    sram_peak: dict[str, int] = field(default_factory=dict)  # entries used per buffer
    tiles: int = 0


# --------------------------------------------------------------------------- sizes
def sram_need(g: LayerGeom, p: TilePlan, config: VTAConfig) -> dict[str, int]:
    """Entries each buffer needs per virtual thread for plan ``p`` (uops: whole kernel estimate)."""
    icb, _ = g.blocks(config)
    kh, kw = g.kernel
    ih = (p.th - 1) * g.stride[0] + kh
    iw = (p.tw - 1) * g.stride[1] + kw
    return {
        "inp": icb * ih * iw,
        "wgt": p.oc_tile * icb * kh * kw,
        "acc": p.oc_tile * p.th * p.tw + (3 * p.oc_tile if g.uses_vec else 0),
        "uop": p.vthreads * 2 * (p.tw * icb * kh * kw + 4 * p.tw),
    }


def fits(g: LayerGeom, p: TilePlan, config: VTAConfig) -> bool:
    """Whether plan ``p`` fits the SRAMs."""
    need = sram_need(g, p, config)
    v = p.vthreads
    return (need["inp"] <= config.inp_depth // v and need["wgt"] <= config.wgt_depth // v
            and need["acc"] <= config.acc_depth // v and need["uop"] <= config.uop_depth)


def candidate_plans(g: LayerGeom, config: VTAConfig) -> list[TilePlan]:
    """Plans worth simulating (largest tiles first); raises :class:`DoesNotFit` if none fits."""
    _, ocb = g.blocks(config)
    oh, ow = g.out_hw
    out: list[TilePlan] = []
    for v in (1, 2):
        for oct_ in sorted({ocb, -(-ocb // 2), -(-ocb // 4), 1}, reverse=True):
            tw = ow
            while tw >= 1 and not fits(g, TilePlan(v, oct_, 1, tw), config):
                tw = tw - 1 if tw <= 8 else (tw + 1) // 2
            if tw < 1:
                continue
            th_max = 1
            lo, hi = 1, oh
            while lo <= hi:
                mid = (lo + hi) // 2
                if fits(g, TilePlan(v, oct_, mid, tw), config):
                    th_max, lo = mid, mid + 1
                else:
                    hi = mid - 1
            for th in sorted({th_max, min(th_max, -(-oh // 2)), min(th_max, -(-oh // 4))}, reverse=True):
                # balance the row tiles: same number of tiles, smallest equal height
                th = -(-oh // -(-oh // th))
                n_tiles = -(-ocb // oct_) * -(-oh // th) * -(-ow // tw)
                if v == 2 and n_tiles < 2:
                    continue
                plan = TilePlan(v, oct_, th, tw)
                if plan not in out:
                    out.append(plan)
    if not out:
        raise DoesNotFit(_does_not_fit_message(g, config))
    return out


def _does_not_fit_message(g: LayerGeom, config: VTAConfig) -> str:
    need = sram_need(g, TilePlan(1, 1, 1, 1), config)
    caps = {"inp": config.inp_depth, "wgt": config.wgt_depth, "acc": config.acc_depth, "uop": config.uop_depth}
    names = {"inp": "input", "wgt": "weight", "acc": "accumulator", "uop": "micro-op"}
    worst = max(caps, key=lambda k: need[k] / caps[k])
    return (f"layer {g.name} ({g.in_channels}->{g.out_channels}, k{g.kernel[0]}x{g.kernel[1]}) does not fit VTA SRAM: "
            f"its smallest tile needs {need[worst]} {names[worst]} entries, the buffer holds {caps[worst]}")


# --------------------------------------------------------------------------- emission
class _UopTable:
    """Micro-ops of one kernel, deduplicated by key."""

    def __init__(self) -> None:
        self.parts: list[np.ndarray] = []
        self.spans: dict[tuple, tuple[int, int]] = {}
        self.size = 0

    def get(self, key: tuple, make: Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray]],
            config: VTAConfig) -> tuple[int, int]:
        if key not in self.spans:
            d, s, w = make()
            words = pack_uops(d, s, w, config)
            self.spans[key] = (self.size, self.size + len(words))
            self.parts.append(words)
            self.size += len(words)
        return self.spans[key]

    def words(self) -> np.ndarray:
        return np.concatenate(self.parts) if self.parts else np.zeros(0, np.uint32)


def _d(**kw: bool) -> Deps:
    return Deps(**kw)


def _merge(a: Deps, b: Deps) -> Deps:
    return Deps(a.pop_prev or b.pop_prev, a.pop_next or b.pop_next, a.push_prev or b.push_prev, a.push_next or b.push_next)


def _set_deps(insns: list[Insn], first: Deps, last: Deps) -> list[Insn]:
    if not insns:
        return insns
    out = list(insns)
    out[0] = replace(out[0], deps=_merge(out[0].deps, first))
    out[-1] = replace(out[-1], deps=_merge(out[-1].deps, last))
    return out


def emit_kernel(g: LayerGeom, plan: TilePlan, addr: Addresses, config: VTAConfig) -> Kernel:
    """The instruction stream of layer ``g`` under ``plan`` (raises :class:`DoesNotFit` if it does not fit)."""
    if not fits(g, plan, config):
        raise DoesNotFit(_does_not_fit_message(g, config))
    icb, ocb = g.blocks(config)
    kh, kw = g.kernel
    sh, sw = g.stride
    ph, pw = g.padding
    oh, ow = g.out_hw
    if max(ph, pw) > 15:
        raise DoesNotFit(f"layer {g.name}: padding {max(ph, pw)} exceeds the 4-bit pad field of VTA loads")
    v = plan.vthreads
    inp_cap, wgt_cap, acc_cap = config.inp_depth // v, config.wgt_depth // v, config.acc_depth // v
    ih_max = (plan.th - 1) * sh + kh
    iw_max = (plan.tw - 1) * sw + kw
    inp_e, out_e, res_e = addr.inp // config.inp_elem_bytes, addr.out // config.out_elem_bytes, addr.res // config.inp_elem_bytes
    wgt_e, vec_e = addr.wgt // config.wgt_elem_bytes, addr.vec // config.acc_elem_bytes
    taps = icb * kh * kw
    uops = _UopTable()

    def gemm_uops(k: int, tw_c: int) -> tuple[int, int]:
        iw_c = (tw_c - 1) * sw + kw

        def make() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            o, c, y, x = np.meshgrid(np.arange(tw_c), np.arange(icb), np.arange(kh), np.arange(kw), indexing="ij")
            dst = k * acc_cap + o
            src = k * inp_cap + c * ih_max * iw_max + y * iw_c + o * sw + x
            wgt = k * wgt_cap + (c * kh + y) * kw + x
            return dst.ravel(), src.ravel(), wgt.ravel()

        return uops.get(("gemm", k, tw_c), make, config)

    def alu_uops(k: int, tw_c: int, vec: int | None) -> tuple[int, int]:
        def make() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            o = np.arange(tw_c)
            src = np.zeros(tw_c, np.int64) if vec is None else np.full(tw_c, vec_base(k) + vec)
            return k * acc_cap + o, src, np.zeros(tw_c, np.int64)

        return uops.get(("alu", k, tw_c, vec), make, config)

    def vec_base(k: int) -> int:
        return k * acc_cap + plan.oc_tile * plan.th * plan.tw

    tiles = [(a, r, c) for a in range(0, ocb, plan.oc_tile) for r in range(0, oh, plan.th) for c in range(0, ow, plan.tw)]
    n_tiles = len(tiles)
    state: list[dict[str, object]] = [{"wgt": None, "inp": None, "vec": None} for _ in range(v)]
    loads: list[list[Insn]] = []
    computes: list[list[Insn]] = []
    stores: list[list[Insn]] = []
    for t, (a0, r0, c0) in enumerate(tiles):
        k = t % v
        n_oc = min(plan.oc_tile, ocb - a0)
        th_r = min(plan.th, oh - r0)
        tw_c = min(plan.tw, ow - c0)
        iw_c = (tw_c - 1) * sw + kw
        acc_base = k * acc_cap
        ld: list[Insn] = []
        if state[k]["wgt"] != a0:
            n = n_oc * taps
            ld.append(MemInsn(Opcode.LOAD, MemType.WGT, k * wgt_cap, wgt_e + a0 * taps, 1, n, n))
            state[k]["wgt"] = a0
        ikey = (r0, c0, th_r, tw_c)
        if state[k]["inp"] != ikey:
            y0, y1 = r0 * sh - ph, (r0 + th_r - 1) * sh - ph + kh
            x0, x1 = c0 * sw - pw, (c0 + tw_c - 1) * sw - pw + kw
            ys, ye, xs, xe = max(0, y0), min(g.h, y1), max(0, x0), min(g.w, x1)
            if ye <= ys or xe <= xs:
                raise DoesNotFit(f"layer {g.name}: a tile lies entirely in the zero padding (padding too large)")
            whole = (ys, ye, xs, xe, y0, x0) == (0, g.h, 0, g.w, 0, 0) and (y1, x1) == (g.h, g.w)
            if whole and ih_max * iw_max == g.h * g.w:  # blocks are contiguous in DRAM and SRAM: one transfer
                ld.append(MemInsn(Opcode.LOAD, MemType.INP, k * inp_cap, inp_e, 1, icb * g.h * g.w, icb * g.h * g.w))
            for c in range(0 if whole and ih_max * iw_max == g.h * g.w else icb):
                ld.append(MemInsn(Opcode.LOAD, MemType.INP, k * inp_cap + c * ih_max * iw_max,
                                  inp_e + c * g.h * g.w + ys * g.w + xs, ye - ys, xe - xs, g.w,
                                  ys - y0, y1 - ye, xs - x0, x1 - xe))
            state[k]["inp"] = ikey
        cp: list[Insn] = []
        if g.uses_vec and state[k]["vec"] != a0:
            cp.append(MemInsn(Opcode.LOAD, MemType.ACC, vec_base(k), vec_e + a0 * 3, 1, 3 * n_oc, 3 * n_oc))
            state[k]["vec"] = a0
        loop = {"iter_out": n_oc, "iter_in": th_r, "dst_factor_out": th_r * tw_c if n_oc > 1 else 0,
                "dst_factor_in": tw_c if th_r > 1 else 0}

        def alu(op: AluOp, vec: int | None = None, imm: int = 0, *, k: int = k, tw_c: int = tw_c, n_oc: int = n_oc,
                loop: dict[str, int] = loop) -> AluInsn:
            b, e = alu_uops(k, tw_c, vec)
            return AluInsn(op, vec is None, imm, b, e, src_factor_out=3 if (vec is not None and n_oc > 1) else 0,
                           src_factor_in=0, **loop)

        if g.residual:
            for j in range(n_oc):
                cp.append(MemInsn(Opcode.LOAD, MemType.ACC_8BIT, acc_base + j * th_r * tw_c,
                                  res_e + (a0 + j) * oh * ow + r0 * ow + c0, th_r, tw_c, ow))
            if g.res_shift == "vec":
                cp.append(alu(AluOp.SHR, vec=2))
            elif g.res_shift == "imm":
                cp.append(alu(AluOp.SHR, imm=g.res_shift_imm))
        else:
            b, e = alu_uops(k, tw_c, None)
            cp.append(GemmInsn(True, b, e, src_factor_out=0, src_factor_in=0, wgt_factor_out=0, wgt_factor_in=0, **loop))
        b, e = gemm_uops(k, tw_c)
        cp.append(GemmInsn(False, b, e, src_factor_out=0, src_factor_in=sh * iw_c if th_r > 1 else 0,
                           wgt_factor_out=taps if n_oc > 1 else 0, wgt_factor_in=0, **loop))
        if g.bias:
            cp.append(alu(AluOp.ADD, vec=0))
        if g.shift == "vec":
            cp.append(alu(AluOp.SHR, vec=1))
        elif g.shift == "imm":
            cp.append(alu(AluOp.SHR, imm=g.shift_imm))
        if g.relu:
            cp.append(alu(AluOp.MAX, imm=0))
        elif g.clip:
            cp.append(alu(AluOp.MAX, imm=-128))
        if g.clip:
            cp.append(alu(AluOp.MIN, imm=g.clip_hi))
        st: list[Insn] = [MemInsn(Opcode.STORE, MemType.OUT, acc_base + j * th_r * tw_c,
                                  out_e + (a0 + j) * oh * ow + r0 * ow + c0, th_r, tw_c, ow) for j in range(n_oc)]
        loads.append(ld)
        computes.append(cp)
        stores.append(st)

    # dependency tokens (see module docstring of timing.py for the protocol)
    program: list[Insn] = []
    uop_words = uops.words()
    if len(uop_words) > config.uop_depth:
        raise DoesNotFit(f"layer {g.name}: {len(uop_words)} micro-ops exceed the micro-op buffer ({config.uop_depth})")
    program.append(MemInsn(Opcode.LOAD, MemType.UOP, 0, addr.uop // config.uop_elem_bytes, 1, len(uop_words),
                           len(uop_words)))
    for t in range(n_tiles):
        ld = _set_deps(loads[t], _d(pop_next=t >= v), _d(push_next=True))
        cp = _set_deps(computes[t], _d(pop_prev=bool(loads[t]), pop_next=t >= v),
                       _d(push_prev=t + v < n_tiles and bool(loads[t + v]), push_next=True))
        st = _set_deps(stores[t], _d(pop_prev=True), _d(push_prev=t + v < n_tiles or t == n_tiles - 1))
        program += ld + cp + st
    program.append(FinishInsn(Deps(pop_next=True)))
    need = sram_need(g, plan, config)
    peak = {"inp": need["inp"] * v, "wgt": need["wgt"] * v, "acc": need["acc"] * v, "uop": len(uop_words)}
    return Kernel(g.name, g, plan, program, uop_words, addr, peak, n_tiles)


# --------------------------------------------------------------------------- layouts
def block_activation(x: np.ndarray, block: int) -> np.ndarray:
    """(C, H, W) int8 -> (C/16, H, W, 16) int8, channels zero-padded."""
    c, h, w = x.shape
    cb = -(-c // block)
    xp = np.zeros((cb * block, h, w), np.int8)
    xp[:c] = x
    return np.ascontiguousarray(xp.reshape(cb, block, h, w).transpose(0, 2, 3, 1))


def unblock_activation(xb: np.ndarray, channels: int) -> np.ndarray:
    """Inverse of :func:`block_activation`."""
    cb, h, w, b = xb.shape
    return np.ascontiguousarray(xb.transpose(0, 3, 1, 2).reshape(cb * b, h, w)[:channels])


def block_weights(w: np.ndarray, block: int) -> np.ndarray:
    """(O, I, KH, KW) int8 -> (O/16, I/16, KH, KW, 16, 16) int8."""
    o, i, kh, kw = w.shape
    ob, ib = -(-o // block), -(-i // block)
    wp = np.zeros((ob * block, ib * block, kh, kw), np.int8)
    wp[:o, :i] = w
    return np.ascontiguousarray(wp.reshape(ob, block, ib, block, kh, kw).transpose(0, 2, 4, 5, 1, 3))


def block_vectors(bias: np.ndarray, shift: np.ndarray, res_shift: np.ndarray | None, block: int) -> np.ndarray:
    """(O/16, 3, 16) int32: bias, shift and residual shift per channel."""
    o = len(bias)
    ob = -(-o // block)
    v = np.zeros((3, ob * block), np.int32)
    v[0, :o], v[1, :o] = bias, shift
    if res_shift is not None:
        v[2, :o] = res_shift
    return np.ascontiguousarray(v.reshape(3, ob, block).transpose(1, 0, 2))


def choose_plan(g: LayerGeom, config: VTAConfig) -> tuple[TilePlan, int]:
    """The candidate plan with the fewest simulated cycles, and that cycle count."""
    from edgeprune.vta.timing import simulate_timing

    best: tuple[TilePlan, int] | None = None
    for plan in candidate_plans(g, config):
        try:
            kernel = emit_kernel(g, plan, Addresses(), config)
        except DoesNotFit:
            continue
        cycles = simulate_timing(kernel.insns, config).cycles
        if best is None or cycles < best[1]:
            best = (plan, cycles)
    if best is None:
        raise DoesNotFit(_does_not_fit_message(g, config))
    return best


def align(n: int, a: int = 256) -> int:
    """Round ``n`` up to a multiple of ``a``."""
    return (n + a - 1) // a * a


def ceil_div(a: int, b: int) -> int:
    """Ceiling division."""
    return -(-a // b)


__all__ = [
    "Addresses",
    "DoesNotFit",
    "Kernel",
    "LayerGeom",
    "TilePlan",
    "align",
    "block_activation",
    "block_vectors",
    "block_weights",
    "candidate_plans",
    "ceil_div",
    "choose_plan",
    "emit_kernel",
    "fits",
    "sram_need",
    "unblock_activation",
]
