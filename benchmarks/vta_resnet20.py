"""Benchmark: ResNet-20 int8 on the VTA simulator (cycle-approximate; not RTL, not hardware).

Measures bit-exactness of the whole network against the numpy int8 reference,
the simulator's wall time, total cycles on pynq and ultra96, per-layer cycles
against the roofline bound, and int8 vs float top-1 on the demo test set.
Prints a table and writes benchmarks/results/vta-resnet20.json.

    .venv/bin/python benchmarks/vta_resnet20.py [--images N]
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from edgeprune.data import load_data
from edgeprune.fileio import write_json
from edgeprune.models import load_model
from edgeprune.vta import (
    DISCLAIMER,
    VTAConfig,
    compile_qnet,
    program_report,
    quantize_model,
    reference_forward,
    run_program,
)

OUT = Path(__file__).resolve().parent / "results" / "vta-resnet20.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=20, help="test images run through the simulator")
    ap.add_argument("--calib", type=int, default=32, help="calibration images (train split)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = load_data("cifar10-demo")
    model = load_model("resnet20-cifar10")
    t0 = time.perf_counter()
    qnet = quantize_model(model, data.train.sample(args.calib))
    t_quant = time.perf_counter() - t0
    result: dict = {"what": DISCLAIMER, "model": "resnet20-cifar10", "quantisation": "int8, power-of-two scales, "
                    "per-channel weights", "calibration_images": args.calib}
    boards = {}
    for board in ("pynq", "ultra96"):
        cfg = VTAConfig.preset(board)
        t0 = time.perf_counter()
        program = compile_qnet(qnet, cfg)
        t_compile = time.perf_counter() - t0
        rep = program_report(program)
        boards[board] = {"program": program, "report": rep, "compile_s": t_compile}
    # functional simulation (the stream is the same up to tiling choices; run the pynq one)
    program = boards["pynq"]["program"]
    n = min(args.images, len(data.test))
    xs = data.test.example(n)
    sim_times, exact = [], []
    sim_logits = []
    for i in range(n):
        t0 = time.perf_counter()
        out = run_program(program, xs[i:i + 1])
        sim_times.append(time.perf_counter() - t0)
        ref = reference_forward(qnet, xs[i:i + 1])
        exact.append(all(np.array_equal(out[k], ref[k]) for k in ref))
        sim_logits.append(out["logits"].ravel())
    ultra_out = run_program(boards["ultra96"]["program"], xs[:1])
    exact_ultra = np.array_equal(ultra_out["logits"], reference_forward(qnet, xs[:1])["logits"])
    # accuracy: int8 reference (batched, = simulator bit for bit) vs float, whole demo test set
    with torch.no_grad():
        float_pred = torch.cat([model(x).argmax(1) for x, _ in data.test.batches(256)]).numpy()
    int_pred = np.concatenate([reference_forward(qnet, x)["logits"].reshape(len(x), -1).argmax(1)
                               for x, _ in data.test.batches(256)])
    labels = data.test.labels
    sim_pred = np.array([lg.argmax() for lg in sim_logits])
    result["bit_exact"] = {"images": n, "all_tensors_identical": bool(all(exact)), "ultra96_stream_identical_logits": bool(exact_ultra),
                           "sim_argmax_equals_reference": bool(np.array_equal(sim_pred, int_pred[:n]))}
    result["simulation_wall_s"] = {"per_image_median": round(float(np.median(sim_times)), 3),
                                   "per_image_max": round(float(np.max(sim_times)), 3),
                                   "quantise_calibrate_s": round(t_quant, 3),
                                   "compile_s": {b: round(v["compile_s"], 3) for b, v in boards.items()}}
    result["accuracy_top1"] = {"test_images": len(labels), "float": float((float_pred == labels).mean()),
                               "int8": float((int_pred == labels).mean()),
                               "int8_float_agreement": float((int_pred == float_pred).mean())}
    result["boards"] = {}
    for board, v in boards.items():
        rep = v["report"]
        result["boards"][board] = {
            "clock_mhz": rep["config"]["clock_mhz"], "axi_bits": rep["config"]["axi_bytes"] * 8,
            "cycles": rep["cycles"], "time_ms": rep["time_ms"], "effective_gops": rep["effective_gops"],
            "peak_gops": rep["peak_gops"], "dram_bytes": rep["dram_bytes"], "instructions": rep["instructions"],
            "layers_within_2x_roofline": f"{rep['layers_within_2x_roofline']}/{len(rep['layers'])}",
            "busy_cycles": rep["busy_cycles"],
            "layers": [{"name": L["name"], "cycles": L["cycles"], "roofline": L["roofline"]["bound_cycles"],
                        "bound_by": L["roofline"]["bound_by"], "ratio": L["roofline_check"]["ratio"],
                        "plan": L["plan"], "sram_utilisation": L["sram_utilisation"],
                        "reason": L["roofline_check"]["reason"]} for L in rep["layers"]],
        }
    result["machine"] = {"platform": platform.platform(), "python": platform.python_version(),
                         "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                         "numpy": np.__version__, "torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    write_json(OUT, result)

    print(f"ResNet-20 int8 on VTA ({DISCLAIMER})\n")
    print(f"bit-exact vs numpy int8 reference on {n} images: {all(exact)}   "
          f"simulation wall time per image: median {np.median(sim_times):.3f} s, max {np.max(sim_times):.3f} s")
    acc = result["accuracy_top1"]
    print(f"top-1 on {acc['test_images']} demo test images: float {acc['float']:.3f}, int8 {acc['int8']:.3f}\n")
    p, u = result["boards"]["pynq"], result["boards"]["ultra96"]
    print(f"{'layer':20s} {'pynq cyc':>9s} {'roofline':>9s} {'ratio':>6s}  {'ultra96 cyc':>11s} {'roofline':>9s} {'ratio':>6s}")
    for a, b in zip(p["layers"], u["layers"]):
        print(f"{a['name']:20s} {a['cycles']:9d} {a['roofline']:9d} {a['ratio']:6.2f}  {b['cycles']:11d} {b['roofline']:9d} {b['ratio']:6.2f}")
    for board, r in result["boards"].items():
        print(f"\n{board}: {r['cycles']} cycles = {r['time_ms']:.3f} ms at {r['clock_mhz']:g} MHz, "
              f"{r['effective_gops']} GOP/s of {r['peak_gops']:g} peak, {r['dram_bytes']} DRAM bytes, "
              f"{r['layers_within_2x_roofline']} layers within 2x roofline")
    print(f"\nwrote {OUT}")


if __name__ == "__main__":
    main()
