"""ResNet-20 (CIFAR-10) on this CPU: TVM untuned, TVM MetaSchedule-tuned (small budget) and ONNX Runtime.

All three are timed in the same run, interleaved (timing.interleaved: each
repetition times every engine in turn; median of medians), one thread, batch 1,
with the same wall-clock protocol around one call. Writes
benchmarks/results/tvm-vs-ort-resnet20.json. Reports whatever it measures,
including TVM losing.

    .venv/bin/python benchmarks/tvm_vs_ort.py [--trials 64] [--repeats 3]
"""
from __future__ import annotations

import argparse
import functools
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgeprune.compile import compile as ep_compile
from edgeprune.compile.onnx_export import export_onnx
from edgeprune.config import get_target
from edgeprune.fileio import write_json
from edgeprune.models import load_model
from edgeprune.profile.timing import TimingProtocol, interleaved

OUT = ROOT / "benchmarks" / "results" / "tvm-vs-ort-resnet20.json"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=64, help="MetaSchedule trial budget for the tuned engine")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repetitions")
    args = ap.parse_args()
    import onnxruntime as ort
    import tvm

    from edgeprune.backends.ort.runtime import make_session
    from edgeprune.backends.tvm.runtime import LoadedModule
    from edgeprune.graph import example_input

    model = load_model("resnet20-cifar10").eval()
    x = example_input(model, shape=(1, 3, 32, 32))  # seeded standard normal
    with torch.no_grad():
        ref = model(x).numpy()
    xn = x.numpy()
    cpu_tvm, cpu_ort = get_target("cpu-tvm"), get_target("cpu-ort")
    load_before = os.getloadavg()
    runs, info = {}, {}
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        sess = make_session(export_onnx(model, x, d / "r20.onnx"), cpu_ort)
        name = sess.get_inputs()[0].name
        runs["ort"] = lambda: sess.run(None, {name: xn})
        info["ort"] = {"max_abs_err": float(np.abs(sess.run(None, {name: xn})[0] - ref).max()), "version": ort.__version__}

        for tag, trials in (("tvm_untuned", 0), ("tvm_tuned", args.trials)):
            t0 = time.perf_counter()
            eng = ep_compile(model, cpu_tvm, d / tag, x, tune_trials=trials, tune_dir=str(d / f"{tag}-db"), log=print)
            secs = time.perf_counter() - t0
            m = LoadedModule(eng.files["module"], "cpu")
            xt = m.tensor(xn)
            main_fn = m.vm["main"]
            runs[tag] = functools.partial(main_fn, xt)
            info[tag] = {
                "tune_trials": trials, "compile_s": round(secs, 1),
                "max_abs_err": float(np.abs(m.run(xn) - ref).max()), "tvm_target": eng.manifest["tvm_target"],
            }
            print(f"{tag}: compiled in {secs:.1f}s", flush=True)
        proto = TimingProtocol(warmup=20, min_runs=50, max_runs=200, round_size=25, rel_tol=0.02, max_seconds=10)
        t0 = time.perf_counter()
        res = interleaved(runs, proto, repeats=args.repeats)
        timing_s = time.perf_counter() - t0
    result = {
        "benchmark": "ResNet-20 CIFAR-10, batch 1, fp32, 1 thread: TVM (untuned, MetaSchedule-tuned) vs ONNX Runtime",
        "protocol": "interleaved repetitions of warm-up + timed runs (timing.interleaved), median of medians, wall clock per call",
        "repeats": args.repeats,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "versions": {"tvm": tvm.__version__, "onnxruntime": ort.__version__, "torch": torch.__version__},
        "engines": {k: {**res[k].to_dict(), **info[k]} for k in runs},
        "speed_vs_ort": {k: round(res["ort"].median / res[k].median, 3) for k in runs},
        "timing_s": round(timing_s, 1),
        "note": "speed_vs_ort > 1 means faster than ONNX Runtime. The machine is shared: see loadavg.",
    }
    write_json(OUT, result)
    for k in runs:
        print(f"{k:12s} median {res[k].median:8.3f} ms  p10 {res[k].p10:8.3f}  p90 {res[k].p90:8.3f}  x{result['speed_vs_ort'][k]:.3f} vs ORT")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
