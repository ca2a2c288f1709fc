"""Benchmark: dense vs pruned ResNet-56 as TensorRT engines, fp32 / fp16 / int8, measured on the GPU at hand.

Needs tensorrt and a CUDA GPU (a Jetson or any NVIDIA GPU); elsewhere it exits
with status 2 and says why. No TensorRT figure has been measured for edgeprune
yet: run this on a GPU machine and commit the JSON it writes.

Models: the dense pretrained ResNet-56; the same with every prunable group cut
to half its width rounded to the target's channel multiple ("pruned-aligned");
and cut to the same fraction without rounding ("pruned-unaligned", widths like
7/15/31 that tensor-core kernels have to pad). Channels are chosen by the L1
norm of their producing convs; the pruned models are not fine-tuned, so their
agreement with the dense model is reported, not their accuracy.

Latency: one ``execute_async_v3`` between CUDA events, batch 1; every engine is
timed ``--repeats`` times, interleaved, and the median of medians reported.

    python benchmarks/trt_resnet56.py [--target gpu-trt] [--repeats 5] [--images 256]

Writes benchmarks/results/trt-resnet56-<gpu>.json.
"""
from __future__ import annotations

import argparse
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _fail(msg: str) -> None:
    print(f"trt_resnet56: {msg}", file=sys.stderr)
    print("trt_resnet56: no TensorRT figure was measured (this benchmark needs tensorrt and an NVIDIA GPU)", file=sys.stderr)
    raise SystemExit(2)


def _check_device() -> str:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        _fail("unavailable: tensorrt not installed")
    from edgeprune.backends.trt.runtime import cuda_status

    ok, text = cuda_status()
    if not ok:
        _fail(text)
    return text


def _prune(model, example, fraction: float, multiple: int):
    import torch

    from edgeprune.graph import channel_groups
    from edgeprune.prune import prune, round_channels

    graph = channel_groups(model, example)
    modules = dict(model.named_modules())
    keep = {}
    for g in graph.prunable:
        k = round_channels(g.size * fraction, multiple, g.size)
        score = torch.zeros(g.size)
        for name in g.producers():
            w = getattr(modules.get(name), "weight", None)
            if isinstance(w, torch.Tensor) and w.dim() >= 2 and w.shape[0] == g.size:
                score += w.detach().abs().flatten(1).sum(1)
        keep[g.id] = torch.argsort(score, descending=True)[:k].sort().values
    return prune(model, keep, example)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="gpu-trt", help="a trt target (gpu-trt, jetson-orin-nano-trt, jetson-agx-orin-trt)")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved repetitions of the timing protocol")
    ap.add_argument("--images", type=int, default=256, help="test images for agreement with PyTorch")
    ap.add_argument("--calib", type=int, default=256, help="calibration images for int8")
    ap.add_argument("--fraction", type=float, default=0.5, help="width kept by the pruned variants")
    args = ap.parse_args(argv)
    gpu = _check_device()

    import numpy as np
    import torch

    from edgeprune.backends.trt.config import build_spec
    from edgeprune.backends.trt.runtime import TrtSession, build_engine
    from edgeprune.compile.onnx_export import export_onnx
    from edgeprune.config import get_target
    from edgeprune.data import load_data
    from edgeprune.fileio import write_json
    from edgeprune.graph import example_input
    from edgeprune.models import load_model
    from edgeprune.profile.timing import Timing, TimingProtocol

    target = get_target(args.target)
    data = load_data("cifar10-demo")
    dense = load_model("resnet56-cifar10").eval()
    example = example_input(dense)  # zeros (1, 3, 32, 32)
    models = {
        "dense": dense,
        "pruned-aligned": _prune(dense, example, args.fraction, target.channel_multiple),
        "pruned-unaligned": _prune(dense, example, args.fraction * 0.97, 1),
    }
    xs = data.test.example(min(args.images, len(data.test)))
    calib = data.train.sample(args.calib).numpy()
    with torch.no_grad():
        ref = {name: m(xs).numpy() for name, m in models.items()}
    sessions: dict[str, TrtSession] = {}
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as d:
        for name, model in models.items():
            fp32 = export_onnx(model, example, Path(d) / f"{name}.onnx")
            for prec in ("fp32", "fp16", "int8"):
                key = f"{name}/{prec}"
                row: dict = {"model": name, "precision": prec, "params": sum(p.numel() for p in model.parameters())}
                rows[key] = row
                if prec not in target.precisions:
                    row["skipped"] = f"target {target.name} does not list {prec}"
                    continue
                src = fp32
                if prec == "int8":
                    try:
                        from edgeprune.quant.ort_int8 import quantize_onnx

                        src = Path(quantize_onnx(fp32, Path(d) / f"{name}.int8.onnx", target, calib=calib, exclude=[]).path)
                    except Exception as err:  # noqa: BLE001 - the quantiser is another module: record, do not hide the rest
                        row["skipped"] = f"int8 Q/DQ export failed: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                        continue
                spec = build_spec(target, prec, engine_dir=RESULTS.parent / "cache" / "trt")  # benchmarks/cache/: ignored by git
                try:
                    built = build_engine(src, spec)
                except Exception as err:  # noqa: BLE001 - record the failure, time the others
                    row["skipped"] = f"build failed: {str(err).splitlines()[0]}"
                    continue
                row.update({"build_s": round(built.build_seconds, 2), "engine_bytes": len(built.plan), "flags": list(spec.flags)})
                sess = TrtSession(built.plan, spec.dla_core)
                out = np.concatenate([sess.run(xs[i : i + 1].numpy()) for i in range(len(xs))])
                row["top1_agreement_with_torch"] = float((out.argmax(1) == ref[name].argmax(1)).mean())
                row["max_abs_error_vs_torch"] = float(np.abs(out - ref[name]).max())
                row["top1_agreement_with_dense_torch"] = float((out.argmax(1) == ref["dense"].argmax(1)).mean())
                sessions[key] = sess
        protocol = TimingProtocol(warmup=50, min_runs=200, max_runs=2000, round_size=50, rel_tol=0.005, max_seconds=10.0)
        per: dict[str, list[Timing]] = {k: [] for k in sessions}
        t0 = time.perf_counter()
        for _ in range(args.repeats):
            for key, sess in sessions.items():
                sess.fill_random()
                per[key].append(sess.time_engine(protocol))
        for key, ts in per.items():
            meds = [t.median for t in ts]
            rows[key].update({
                "latency_ms": float(np.median(meds)),
                "latency_spread": float((max(meds) - min(meds)) / np.median(meds)),
                "p10_ms": float(np.median([t.p10 for t in ts])),
                "p90_ms": float(np.median([t.p90 for t in ts])),
            })
        for sess in sessions.values():
            sess.close()
    base = rows.get("dense/fp32", {}).get("latency_ms")
    for row in rows.values():
        if base and "latency_ms" in row:
            row["speedup_vs_dense_fp32"] = base / row["latency_ms"]
    import tensorrt

    result = {
        "what": "ResNet-56 (CIFAR-10) TensorRT engines, batch 1, CUDA-event latency, median of interleaved medians",
        "gpu": gpu,
        "target": target.name,
        "tensorrt": tensorrt.__version__,
        "torch": torch.__version__,
        "host": platform.platform(),
        "repeats": args.repeats,
        "timing_seconds": round(time.perf_counter() - t0, 1),
        "fraction_kept": args.fraction,
        "rows": list(rows.values()),
    }
    slug = re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-") or "gpu"
    path = write_json(RESULTS / f"trt-resnet56-{slug}.json", result)
    print(f"{'model':18} {'prec':5} {'ms':>8} {'x fp32':>7} {'agree':>6}")
    for row in rows.values():
        if "latency_ms" in row:
            print(f"{row['model']:18} {row['precision']:5} {row['latency_ms']:8.3f} {row.get('speedup_vs_dense_fp32', 0):7.2f} {row['top1_agreement_with_torch']:6.3f}")
        else:
            print(f"{row['model']:18} {row['precision']:5} skipped: {row.get('skipped')}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
