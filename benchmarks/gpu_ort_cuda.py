"""Device check: ResNet-56 and MobileNetV2 (CIFAR size) profiled and compressed on ``gpu-ort-cuda``.

Needs ``onnxruntime-gpu`` and an NVIDIA GPU (``CUDAExecutionProvider`` in
``onnxruntime.get_available_providers()``); elsewhere it prints the one-line reason and exits 2, measuring
nothing. For each model it runs, as a user would:

    edgeprune compress --target gpu-ort-cuda --model M --budget latency=0.8x --profiles DIR --out RUN

(compress measures the model's profile on the GPU first and stores it in DIR)
and records the GPU (nvidia-smi name, driver, memory; ORT's version and device), the profile's timing method
(``kernels`` from CUDA-profiling ORT builds, else ``wall``), and the compress report (dense and compressed
latency measured on that GPU, budget met, per-layer precisions, verification). Models: ``resnet56-cifar10``
(pretrained) and ``torchvision:mobilenet_v2`` with ``num_classes=10`` at 32 px (untrained: latency and
agreement with PyTorch only).

    python benchmarks/gpu_ort_cuda.py [--budget latency=0.8x] [--epochs 0] [--quick]

Writes benchmarks/results/gpu-ort-cuda-<model>.json (docs/gpu.md).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
TARGET = "gpu-ort-cuda"
MODELS = {
    "resnet56": ["--model", "resnet56-cifar10"],
    "mobilenetv2": ["--model", "torchvision:mobilenet_v2", "--model-arg", "num_classes=10", "--input-shape", "1,3,32,32"],
}


def gpu_info() -> dict:
    """The GPU's name, driver and memory from nvidia-smi, and ORT's version and device."""
    import onnxruntime as ort

    info: dict = {"onnxruntime": ort.__version__, "ort_device": ort.get_device(),
                  "providers": ort.get_available_providers()}
    smi = shutil.which("nvidia-smi")
    if smi:
        r = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                           capture_output=True, text=True, check=False)
        if r.returncode == 0 and r.stdout.strip():
            name, driver, mem = [s.strip() for s in r.stdout.splitlines()[0].split(",")]
            info.update(gpu=name, driver=driver, memory=mem)
    info.setdefault("gpu", "unknown (no nvidia-smi)")
    return info


def _edgeprune(args: list[str], cwd: Path, timeout: float) -> tuple[int, float, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "edgeprune", *args], capture_output=True, text=True, env=env, cwd=cwd,
                       timeout=timeout, check=False)
    return r.returncode, time.perf_counter() - t0, (r.stderr or "")[-3000:]


def run_model(key: str, spec: list[str], args: argparse.Namespace, info: dict, work: Path) -> dict:
    """Compress one model on the GPU (profiling it first); the row written to the results file."""
    profiles = work / "profiles"
    quick = ["--quick"] if args.quick else []
    row: dict = {"model": key, "target": TARGET, "device": info, "budget": args.budget, "epochs": args.epochs}
    out = work / f"run-{key}"
    rc, secs, err = _edgeprune(["compress", "--target", TARGET, *spec, "--budget", args.budget, "--criterion", "l1",
                                "--epochs", str(args.epochs), "--profiles", str(profiles), "--out", str(out), *quick],
                               work, args.timeout)
    row["compress"] = {"rc": rc, "seconds": round(secs, 1), "stderr_tail": err if rc else ""}
    for prof_file in sorted(profiles.glob("*.json")):  # the profile compress measured on this GPU
        doc = json.loads(prof_file.read_text())
        recs = list((doc.get("records") or {}).values())
        row["profile"] = {"file": prof_file.name, "records": len(recs), "dense_latency": doc.get("dense_latency"),
                          "layer_timing": sorted({str((r.get("meta") or {}).get("layer_timing")) for r in recs}),
                          "precisions": sorted({str(r.get("signature", {}).get("dtype")) for r in recs})}
    report = out / "report.json"
    if report.exists():
        rep = json.loads(report.read_text())
        precisions = (rep.get("plan") or {}).get("precisions") or rep.get("precisions") or {}
        row["compress"].update({k: rep.get(k) for k in ("dense", "compressed", "speedup", "budget_met", "verify")},
                               fp16_layers=sum(p == "fp16" for p in precisions.values()), layers=len(precisions))
        manifest = out / "manifest.json"
        if manifest.exists():
            row["compress"]["engine"] = json.loads(manifest.read_text()).get("engine")
    return row


def main(argv: list[str] | None = None) -> int:
    """Check the device, run every model, write the JSON files; 2 when CUDA is not here."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", default="latency=0.8x", help="compress budget, measured on this GPU (default latency=0.8x)")
    ap.add_argument("--epochs", type=float, default=0.0, help="fine-tuning epochs (default 0: latency is the point)")
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {', '.join(MODELS)}")
    ap.add_argument("--quick", action="store_true", help="short timing protocols (a smoke run)")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per edgeprune command")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from edgeprune.backends import availability
    from edgeprune.config import get_target

    ok, why = availability(get_target(TARGET))
    if not ok:
        print(f"gpu_ort_cuda: {why}", file=sys.stderr)
        return 2
    from edgeprune.fileio import write_json

    info = gpu_info()
    print(f"gpu_ort_cuda: {info['gpu']} (driver {info.get('driver', '?')}), onnxruntime {info['onnxruntime']}")
    status = 0
    with tempfile.TemporaryDirectory(prefix="edgeprune-gpu-") as d:
        for key in [k for k in args.models.split(",") if k]:
            row = run_model(key, MODELS[key], args, info, Path(d))
            path = write_json(RESULTS / f"gpu-ort-cuda-{key}.json", row)
            c = row["compress"]
            print(f"{key}: compress rc={c['rc']}, speedup={c.get('speedup')}, "
                  f"budget met={c.get('budget_met')} -> {path.relative_to(ROOT)}")
            status = max(status, c["rc"])
    return status


if __name__ == "__main__":
    raise SystemExit(main())
