"""The "FPGA build": compile a model for VTA, write the stream, weights and a report; per-layer costs.

Everything here is a cycle-approximate simulation of the VTA architecture,
not an RTL simulation and not a measurement on hardware.
"""
from __future__ import annotations

import functools
import platform
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeprune.errors import UnsupportedLayer
from edgeprune.fileio import write_bytes, write_json, write_text
from edgeprune.graph.signature import LayerSignature
from edgeprune.vta.cnn import CnnNet, quantize_cnn, reference_forward_cnn
from edgeprune.vta.cnn_program import CnnProgram, block_ranges, compile_cnn, run_cnn_program
from edgeprune.vta.compiler import Addresses, DoesNotFit, Kernel, LayerGeom, choose_plan, emit_kernel
from edgeprune.vta.config import VTAConfig
from edgeprune.vta.program import Program, compile_qnet, run_program
from edgeprune.vta.quantize import QNet, _check_family, quantize_model, reference_forward
from edgeprune.vta.timing import TimingResult, simulate_timing

DISCLAIMER = ("cycle-approximate simulation of the VTA architecture (edgeprune's own numpy model of its ISA, "
              "pipeline and memory system); not an RTL simulation and not a measurement on an FPGA")


def roofline(g: LayerGeom, config: VTAConfig) -> dict[str, Any]:
    """Lower bounds on a layer's cycles, one per module, for this lowering.

    * compute: every padded GEMM block op (1/cycle), accumulator resets, the ALU vector ops
      (``alu_ii`` each) and the compute module's own loads (vectors, residual) at bus speed;
    * load: input and weights read once at bus speed;
    * store: the output written once at bus speed.
    The bound is the largest; ``gemm_bound`` is the plain MAC-array bound for reference.
    """
    icb, ocb = g.blocks(config)
    oh, ow = g.out_hw
    kh, kw = g.kernel
    vectors = ocb * oh * ow
    gemm = ocb * icb * kh * kw * oh * ow
    alu = g.alu_ops_per_vector * vectors * config.alu_ii
    reset = 0 if g.residual else vectors
    cbytes = (3 * ocb * config.acc_elem_bytes if g.uses_vec else 0) + (vectors * config.inp_elem_bytes if g.residual else 0)
    lbytes = icb * g.h * g.w * config.inp_elem_bytes + ocb * icb * kh * kw * config.wgt_elem_bytes
    sbytes = vectors * config.out_elem_bytes
    bus = config.axi_bytes
    bounds = {"compute": gemm + reset + alu + -(-cbytes // bus), "load": -(-lbytes // bus), "store": -(-sbytes // bus)}
    true_macs = g.in_channels * g.out_channels * kh * kw * oh * ow
    return {
        "bound_cycles": max(bounds.values()),
        "bound_by": max(bounds, key=bounds.__getitem__),
        "module_bounds": bounds,
        "gemm_bound": max(gemm, -(-(lbytes + sbytes + cbytes) // bus)),
        "macs": true_macs,
        "padded_macs": gemm * config.macs_per_cycle,
        "padding_overhead": round(gemm * config.macs_per_cycle / true_macs, 4) if true_macs else None,
        "min_dram_bytes": lbytes + sbytes + cbytes,
    }


def roofline_check(cycles: int, roof: dict[str, Any], timing: TimingResult, config: VTAConfig) -> dict[str, Any]:
    """Ratio of simulated cycles to the bound, whether it lies in [1, 2], and why not if it does not."""
    bound = roof["bound_cycles"]
    ratio = cycles / bound if bound else float("inf")
    ok = 1.0 <= ratio <= 2.0
    reason = ""
    if ratio < 1.0:
        reason = "simulated cycles below the roofline bound: a model inconsistency (please report)"
    elif ratio > 2.0:
        fixed = cycles - bound
        reason = (f"small layer: fixed costs dominate ({fixed} cycles over the bound of {bound}: each LOAD/STORE waits "
                  f"{config.dram_latency} cycles of DRAM latency, pipelines fill, and the first load and last store "
                  f"of a kernel cannot overlap compute)")
        stalls = timing.stalls.get("compute", {})
        if stalls:
            worst = max(stalls, key=stalls.__getitem__)
            reason += f"; compute stalled {stalls[worst]} cycles on {worst}"
    return {"ratio": round(ratio, 3), "within_2x": ok, "reason": reason}


def kernel_report(k: Kernel, tr: TimingResult, config: VTAConfig) -> dict[str, Any]:
    """Per-layer section of the report."""
    roof = roofline(k.geom, config)
    g = k.geom
    depth = {"inp": config.inp_depth, "wgt": config.wgt_depth, "acc": config.acc_depth, "uop": config.uop_depth}
    return {
        "name": k.name,
        "shape": {"in_channels": g.in_channels, "out_channels": g.out_channels, "in_hw": [g.h, g.w],
                  "kernel": list(g.kernel), "stride": list(g.stride), "padding": list(g.padding),
                  "residual": g.residual, "relu": g.relu},
        "plan": {"vthreads": k.plan.vthreads, "tile_oc_blocks": k.plan.oc_tile, "tile_rows": k.plan.th,
                 "tile_cols": k.plan.tw, "tiles": k.tiles},
        "cycles": tr.cycles,
        "time_ms": round(config.cycles_to_ms(tr.cycles), 6),
        "timing": tr.to_dict(),
        "sram_utilisation": {b: round(k.sram_peak[b] / depth[b], 4) for b in depth},
        "sram_entries": dict(k.sram_peak),
        "roofline": roof,
        "roofline_check": roofline_check(tr.cycles, roof, tr, config),
        "gemm_utilisation": round(roof["macs"] / (config.macs_per_cycle * tr.cycles), 4) if tr.cycles else 0.0,
    }


def program_report(program: Program) -> dict[str, Any]:
    """The report of a compiled program (no functional run)."""
    cfg = program.config
    layers = [kernel_report(k, tr, cfg) for k, tr in zip(program.kernels, program.timings)]
    total = sum(tr.cycles for tr in program.timings)
    macs = sum(r["roofline"]["macs"] for r in layers)
    stalls: dict[str, dict[str, int]] = {}
    for tr in program.timings:
        for m, s in tr.stalls.items():
            for c, v in s.items():
                stalls.setdefault(m, {})[c] = stalls.setdefault(m, {}).get(c, 0) + v
    busy = _busy_cycles(program.timings)
    return {
        **_report_head(cfg, total),
        "host_steps": ["quantise the float input to int8 (power-of-two scale)",
                       "global average pooling (integer mean, rounded half-up) before the dense layer"],
        "kernels": len(program.kernels),
        "instructions": sum(len(k.insns) for k in program.kernels),
        "micro_ops": sum(len(k.uops) for k in program.kernels),
        "dram_bytes": sum(tr.dram_bytes for tr in program.timings),
        "dram_image_bytes": program.dram_bytes,
        "weights_bytes": program.const_bytes,
        "macs": macs,
        "effective_gops": round(2 * macs / (cfg.cycles_to_ms(total) * 1e6), 3) if total else 0.0,
        "peak_gops": cfg.peak_gops,
        "busy_cycles": busy,
        "stall_cycles": stalls,
        "layers_within_2x_roofline": sum(r["roofline_check"]["within_2x"] for r in layers),
        "layers": layers,
        "memory_map": program.regions,
        "quantisation": {"per_channel_weights": program.qnet.per_channel, "input_frac": program.qnet.input_frac,
                         "tensor_fracs": program.qnet.fracs},
    }


def _busy_cycles(timings: list[TimingResult]) -> dict[str, int]:
    """Busy cycles per module, summed over every kernel's timing."""
    busy: dict[str, int] = {}
    for tr in timings:
        for m, b in tr.busy.items():
            busy[m] = busy.get(m, 0) + b
    return busy


def _report_head(cfg: VTAConfig, total: int) -> dict[str, Any]:
    """The keys every build report opens with: what it is (simulated), the board, its config, the cycles."""
    return {"what": DISCLAIMER, "board": cfg.board, "config": cfg.to_json_dict(), "fits": True, "cycles": total,
            "time_ms": round(cfg.cycles_to_ms(total), 6)}


def cnn_report(program: CnnProgram) -> dict[str, Any]:
    """The report of a compiled general CNN: kernels, host steps with their DMA cost, and which layer ran where."""
    cfg = program.config
    layers, placement = [], []
    for s in program.steps:
        if s.where == "host":
            assert s.host is not None
            placement.append({"name": s.name, "runs_on": "host", "op": s.host.what, "inputs": s.host.inputs,
                              "output": s.host.output, "dma_bytes": s.dma_bytes, "dma_cycles": s.dma_cycles})
            continue
        assert s.layer is not None
        reps = [kernel_report(k, tr, cfg) for k, tr in zip(s.kernels, s.timings)]
        layers += reps
        placement.append({"name": s.name, "runs_on": "vta", "op": f"{s.layer.kind} groups={s.layer.groups}",
                          "kernels": len(s.kernels), "cycles": s.cycles})
    host_dma = sum(s.dma_cycles for s in program.steps) + program.input_dma[1]
    kernel_cycles = sum(tr.cycles for tr in program.timings)
    total = program.cycles
    busy = _busy_cycles(program.timings)
    return {
        **_report_head(cfg, total),
        "vta_cycles": kernel_cycles,
        "host_dma_cycles": host_dma,
        "host_compute": "not modelled: host steps run on the board's CPU; only their DRAM transfers are priced",
        "host_steps": [f"quantise the float input to int8 (power-of-two scale); DMA {program.input_dma[0]} B"]
                      + [f"{p['name']}: {p['op']}" for p in placement if p["runs_on"] == "host"],
        "placement": placement,
        "kernels": len(program.kernels),
        "instructions": sum(len(k.insns) for k in program.kernels),
        "micro_ops": sum(len(k.uops) for k in program.kernels),
        "dram_bytes": sum(tr.dram_bytes for tr in program.timings) + sum(s.dma_bytes for s in program.steps)
                      + program.input_dma[0],
        "dram_image_bytes": program.dram_bytes,
        "weights_bytes": program.const_bytes,
        "busy_cycles": busy,
        "layers_within_2x_roofline": sum(r["roofline_check"]["within_2x"] for r in layers),
        "layers": layers,
        "memory_map": program.regions,
        "quantisation": {"per_channel_weights": program.net.per_channel, "input_frac": program.net.input_frac,
                         "tensor_fracs": program.net.fracs},
    }


def is_resnet_family(model: nn.Module) -> bool:
    """Whether ``model`` takes the CIFAR ResNet path (the original compiler, whose cycle counts are pinned)."""
    try:
        _check_family(model)
    except UnsupportedLayer:
        return False
    return True


def build(model: nn.Module, example_input: torch.Tensor, calib_images: torch.Tensor, config: VTAConfig,
          out_dir: str | Path, per_channel: bool = True, verify: bool = True) -> dict[str, Any]:
    """Compile ``model`` for VTA and write ``out_dir/vta/{program.bin, program.lst, weights.bin, report.json}``.

    CIFAR ResNets take the ResNet compiler; any other CNN the general path of
    :mod:`edgeprune.vta.cnn` (accelerator layers plus host steps; the report's
    ``placement`` says which ran where).  With ``verify``, the example input runs
    through the functional simulator and its int8 logits (and every intermediate
    tensor) are compared with the numpy int8 reference.  Raises
    :class:`DoesNotFit` (exit code 1) when a layer cannot be tiled into the SRAMs.
    Returns the report.
    """
    t0 = time.perf_counter()
    program: Program | CnnProgram
    if is_resnet_family(model):
        qnet: QNet | CnnNet = quantize_model(model, calib_images, per_channel=per_channel)
        program = compile_qnet(qnet, config)
        report = program_report(program)
        out_name = "logits"
    else:
        qnet = quantize_cnn(model, calib_images, per_channel=per_channel)
        program = compile_cnn(qnet, config)
        report = cnn_report(program)
        out_name = qnet.output
    report["compile_seconds"] = round(time.perf_counter() - t0, 3)
    if verify:
        x = example_input[:1]
        t1 = time.perf_counter()
        sim = run_cnn_program(program, x) if isinstance(program, CnnProgram) else run_program(program, x)
        report["functional_sim_seconds"] = round(time.perf_counter() - t1, 3)
        ref = reference_forward_cnn(program.net, x) if isinstance(program, CnnProgram) else reference_forward(program.qnet, x)
        mismatched = [n for n in ref if not np.array_equal(ref[n], sim[n])]
        report["verification"] = {
            "bit_exact": not mismatched,
            "mismatched_tensors": mismatched,
            "logits_int8": sim[out_name].ravel().tolist(),
            "logits_frac": qnet.logits_frac,
            "hazard_checked": True,
        }
    out = Path(out_dir) / "vta"
    write_bytes(out / "program.bin", program.binary())
    write_text(out / "program.lst", program.listing())
    write_bytes(out / "weights.bin", program.const_image.tobytes())
    report["files"] = {n: str(out / n) for n in ("program.bin", "program.lst", "weights.bin", "report.json")}
    report["host"] = {"python": platform.python_version(), "machine": platform.machine()}
    write_json(out / "report.json", report)
    return report


# --------------------------------------------------------------------------- profiler backend
def geom_from_signature(sig: LayerSignature) -> LayerGeom:
    """The lowering of one conv2d/linear layer configuration (per-channel requantisation, bias, clip)."""
    if sig.op not in ("conv2d", "linear"):
        raise UnsupportedLayer(f"VTA costs conv2d and linear layers only, not {sig.op!r}")
    post = sig.post or ""
    if sig.op == "linear":
        return LayerGeom(sig.key(), sig.in_channels, sig.out_channels, 1, 1, (1, 1), (1, 1), (0, 0),
                         relu="relu" in post, residual="add" in post)
    return LayerGeom(sig.key(), sig.in_channels, sig.out_channels, sig.in_hw[0], sig.in_hw[1], tuple(sig.kernel),
                     tuple(sig.stride), tuple(sig.padding), relu="relu" in post, residual="add" in post,
                     res_shift="vec" if "add" in post else "none")


@functools.lru_cache(maxsize=4096)
def layer_cycles(sig: LayerSignature, config: VTAConfig) -> dict[str, Any]:
    """Simulated cost of one conv2d/linear layer configuration on VTA (the ``vta`` profiler backend).

    Returns ``cycles``, ``time_ms`` at the board's clock, ``dram_bytes``, ``fits``
    (False, with ``reason`` and ``cycles`` None, when no tiling fits the SRAMs),
    the chosen tiling and the roofline bound.  Costs are for int8 whatever
    ``sig.dtype`` says; channel counts are padded to the block size (16), at
    the cost that padding really has.
    """
    whole = geom_from_signature(sig)
    groups = sig.in_channels if sig.groups == -1 else int(sig.groups or 1)  # -1: depthwise
    b = config.block
    if groups > 1 and (sig.in_channels % groups or sig.out_channels % groups):
        raise UnsupportedLayer(f"groups={groups} does not divide {sig.in_channels}->{sig.out_channels} channels")
    parts = []  # grouped / depthwise: one kernel per connected channel-block range, as the CNN compiler emits
    for o0, o1, i0, i1 in block_ranges(sig.out_channels, sig.in_channels, groups, b):
        parts.append(replace(whole, out_channels=min(sig.out_channels, o1 * b) - o0 * b,
                             in_channels=min(sig.in_channels, i1 * b) - i0 * b))
    cycles = dram = bound = 0
    plans = []
    for g in parts:
        try:
            plan, _ = choose_plan(g, config)
        except DoesNotFit as err:
            return {"cycles": None, "time_ms": None, "dram_bytes": None, "fits": False, "reason": str(err)}
        k = emit_kernel(g, plan, Addresses(), config)
        tr = simulate_timing(k.insns, config)
        cycles, dram = cycles + tr.cycles, dram + tr.dram_bytes
        bound += roofline(g, config)["bound_cycles"]
        plans.append(k.plan.describe())
    roof = roofline(whole, config)
    return {
        "cycles": cycles,
        "time_ms": config.cycles_to_ms(cycles),
        "dram_bytes": dram,
        "fits": True,
        "plan": plans[0] if len(plans) == 1 else f"{len(plans)} kernels, {plans[0]}",
        "roofline_cycles": roof["bound_cycles"] if len(parts) == 1 else bound,
        "padding_overhead": roof["padding_overhead"] if groups == 1 else None,
        "board": config.board,
        "clock_mhz": config.clock_mhz,
    }

