"""ResNet-20 (CIFAR-10) on this CPU, one thread, batch 1: OpenVINO vs ONNX Runtime, fp32 and int8 (QDQ).

The four engines are timed in the same run, interleaved (timing.interleaved:
each repetition times every engine in turn; median of medians), with the same
wall-clock protocol around one call. Both int8 engines read the same QDQ ONNX
file (``edgeprune.quant.ort_int8.quantize_onnx``, 256 CIFAR-10 training images,
each target's own format options). Also reports each engine's top-1 agreement
with PyTorch on 500 test images. Writes benchmarks/results/openvino-vs-ort-resnet20.json.

    PYTHONPATH=.:/path/to/openvino-site .venv/bin/python benchmarks/openvino_vs_ort.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgeprune.compile import compile as ep_compile
from edgeprune.config import get_target
from edgeprune.environment import cpu_model
from edgeprune.fileio import write_json
from edgeprune.models import load_model
from edgeprune.profile.timing import TimingProtocol, interleaved

OUT = ROOT / "benchmarks" / "results" / "openvino-vs-ort-resnet20.json"


def main() -> int:
    """Build the four engines, time them interleaved, write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repetitions")
    ap.add_argument("--data", default="cifar10-full", help="dataset for calibration and agreement")
    args = ap.parse_args()
    import onnxruntime as ort
    import openvino as ov

    from edgeprune.data import load_data

    torch.set_num_threads(1)
    model = load_model("resnet20-cifar10").eval()
    ds = load_data(args.data)
    calib = ds.train.sample(256, seed=0)
    xs = ds.test.normalise(ds.test.images[:500]).contiguous()
    with torch.no_grad():
        ref = model(xs).numpy()
    x1 = xs[:1].numpy()
    targets = {"ort": get_target("cpu-ort"), "openvino": get_target("cpu-openvino")}
    load_before = os.getloadavg()
    runs, info = {}, {}
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        for backend, target in targets.items():
            for prec in ("fp32", "int8"):
                tag = f"{backend}_{prec}"
                opts = {"quantize": {"calib": calib}} if prec == "int8" else {}
                t0 = time.perf_counter()
                eng = ep_compile(model, target, d / tag, xs[:1], **opts)
                out = eng.run(xs.numpy())
                info[tag] = {"build_s": round(time.perf_counter() - t0, 2), "engine": eng.manifest["engine"],
                             "top1_agreement_500": float((out.argmax(1) == ref.argmax(1)).mean()),
                             "max_abs_err": float(np.abs(out - ref).max())}
                runs[tag] = functools.partial(eng.runner, x1)
                print(f"{tag}: built in {info[tag]['build_s']} s, agreement {info[tag]['top1_agreement_500']:.3f}", flush=True)
        proto = TimingProtocol(warmup=20, min_runs=50, max_runs=300, round_size=25, rel_tol=0.02, max_seconds=10)
        t0 = time.perf_counter()
        res = interleaved(runs, proto, repeats=args.repeats)
        timing_s = time.perf_counter() - t0
    result = {
        "benchmark": "ResNet-20 CIFAR-10, batch 1, 1 thread: OpenVINO CPU plugin vs ONNX Runtime CPU EP, fp32 and int8 QDQ",
        "protocol": "interleaved repetitions of warm-up + timed runs (timing.interleaved), median of medians, wall clock per call "
                    "through each engine's runner (Engine.runner)",
        "repeats": args.repeats,
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "versions": {"openvino": ov.__version__, "onnxruntime": ort.__version__, "torch": torch.__version__},
        "engines": {k: {**res[k].to_dict(), **info[k]} for k in runs},
        "speed_vs_ort_fp32": {k: round(res["ort_fp32"].median / res[k].median, 3) for k in runs},
        "timing_s": round(timing_s, 1),
        "note": "speed > 1 means faster than ONNX Runtime fp32. The machine is shared: see loadavg.",
    }
    write_json(OUT, result)
    for k in runs:
        print(f"{k:14s} median {res[k].median:7.3f} ms  p10 {res[k].p10:7.3f}  p90 {res[k].p90:7.3f}  "
              f"x{result['speed_vs_ort_fp32'][k]:.3f} vs ORT fp32")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
