"""Fine-tuning throughput of ``edgeprune.recover`` on each device this machine has (CPU; CUDA if present).

The headline recipe (batch 128, augmentation, KD from the dense model) on the
embedded CIFAR-10 demo images, ResNet-20 and ResNet-56 from their embedded
pretrained weights. Reports images/s (median of ``repeats`` runs after a
warm-up run) and the share of the wall time spent waiting for the data loader,
which says whether the CPU-side augmentation keeps a GPU fed.

Run: .venv/bin/python benchmarks/recover_speed.py [--images 3840] [--repeats 3] [--out PATH]
Writes benchmarks/results/recover-speed-<machine tag>.json (cpu, or the GPU's name).
"""
from __future__ import annotations

import argparse
import re
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _machine() -> tuple[str, str]:
    """The machine as the results say it (CPU from edgeprune.environment, plus the GPU), and a file-name tag."""
    from edgeprune.environment import machine_info

    m = machine_info()
    desc = f"{m['cpu']} ({m['cores']} cores, {m['isa']})"
    tag = "cpu"
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        desc += f", GPU {name} x{torch.cuda.device_count()}"
        tag = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return f"{desc}, {m['os']}, python {m['python']}", tag


def main(images: int = 3840, repeats: int = 3, out: str | None = None) -> dict:
    """Measure and write the JSON; returns it."""
    from edgeprune.data import load_data
    from edgeprune.environment import versions
    from edgeprune.fileio import write_json
    from edgeprune.models import load_model
    from edgeprune.recover import RecoverConfig, recover

    ds = load_data("cifar10-demo")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    threads = torch.get_num_threads()
    rows = []
    for name in ("resnet20-cifar10", "resnet56-cifar10"):
        teacher = load_model(name).eval()
        for dev in devices:
            rc = RecoverConfig(epochs=1, max_images=images, batch_size=128, bn_recalibrate=False, device=dev)
            rates, waits = [], []
            for rep in range(repeats + 1):  # the first run warms up (cuDNN autotuning, allocator, caches)
                student = load_model(name)
                t = time.perf_counter()
                r = recover(student, ds, teacher=teacher, config=rc, seed=rep)
                wall = time.perf_counter() - t
                if rep:
                    rates.append(r.images_per_s)
                    waits.append(r.data_wait_fraction)
                print(f"{name:18s} {dev:5s} run {rep}{' (warm-up)' if not rep else ''}: "
                      f"{r.images_per_s:8.0f} img/s, data wait {100 * r.data_wait_fraction:4.1f}%, {wall:.1f} s", flush=True)
            rows.append({"model": name, "device": dev, "images_per_s": statistics.median(rates),
                         "images_per_s_runs": rates, "data_wait_fraction": statistics.median(waits),
                         "torch_threads": threads if dev == "cpu" else None})
    machine, tag = _machine()
    doc = {"benchmark": "recover-speed", "rows": rows, "machine": machine,
           "protocol": (f"edgeprune.recover, 1 epoch of {images} embedded CIFAR-10 demo images per run, batch 128, "
                        "random crop + flip, KD from the pretrained dense model (the headline recipe), "
                        f"BN recalibration off; median of {repeats} runs after one warm-up run; "
                        f"torch intra-op threads on the CPU: {threads}"),
           "versions": {**versions(), "cuda": torch.version.cuda}}
    for row in rows:
        print(f"{row['model']:18s} {row['device']:5s} {row['images_per_s']:8.0f} img/s  "
              f"(data wait {100 * row['data_wait_fraction']:.1f}%)")
    path = Path(out) if out else ROOT / "benchmarks" / "results" / f"recover-speed-{tag}.json"
    write_json(path, doc)
    print(f"wrote {path}")
    return doc


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=3840, help="images per run (one epoch)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per model and device")
    ap.add_argument("--out", default=None, help="output JSON (default benchmarks/results/recover-speed-<tag>.json)")
    a = ap.parse_args()
    main(a.images, a.repeats, a.out)
