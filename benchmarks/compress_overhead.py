"""How much of a ``compress`` run is overhead: time outside measuring, training, scoring and solving.

Runs ``python -m edgeprune demo`` once (ResNet-20, embedded CIFAR-10 subset, cpu-ort) into a temporary
folder and reads report.json: ``stage_seconds`` (each stage's wall time) and ``time_split`` (measure:
latency timing, accuracy evaluation and verification; train: fine-tuning; score: importance; solve:
the MILP solver; other: everything else: export, quantisation, pruning, tracing, report writing).
The goal (issue #22) is other <= 5% of the wall time.

Run: .venv/bin/python benchmarks/compress_overhead.py [--epochs 2] [--out PATH]
Writes benchmarks/results/compress-overhead.json.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
GOAL = 0.05


def main(epochs: str | None, out: str | None) -> dict:
    """Run the demo once and write the overhead figures."""
    from edgeprune.environment import machine_info
    from edgeprune.fileio import write_json

    with tempfile.TemporaryDirectory(prefix="edgeprune-overhead-") as d:
        cmd = [sys.executable, "-m", "edgeprune", "demo", "-q", "--out", str(Path(d) / "demo")]
        if epochs is not None:
            cmd += ["--epochs", epochs]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
        process_s = time.perf_counter() - t0
        if proc.returncode not in (0, 1):  # 1: budget missed, the figures are still written
            raise SystemExit(f"demo failed ({proc.returncode}): {proc.stderr[-2000:]}")
        report = json.loads((Path(d) / "demo" / "report.json").read_text())
    split = report["time_split"]
    doc = {
        "benchmark": "compress overhead on the demo (outside measuring, training, scoring and solving)",
        "command": " ".join(["python", "-m", "edgeprune", "demo"] + (["--epochs", epochs] if epochs else [])),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "process_wall_s": round(process_s, 2),
        "compress_wall_s": round(report["wall_s"], 2),
        "stage_seconds": report["stage_seconds"],
        "time_split": split,
        "overhead_share": split["other_share"],
        "goal": GOAL,
        "met": split["other_share"] <= GOAL,
        "budget_met": report["budget_met"],
    }
    print(f"compress wall {doc['compress_wall_s']:.1f} s (process {process_s:.1f} s): "
          + ", ".join(f"{k} {v:.1f} s" for k, v in split.items() if k != "other_share")
          + f"; overhead {100 * split['other_share']:.1f}% (goal <= {100 * GOAL:.0f}%)")
    for name, secs in report["stage_seconds"].items():
        print(f"  {name:14s} {secs:8.2f} s")
    write_json(Path(out) if out else ROOT / "benchmarks" / "results" / "compress-overhead.json", doc)
    return doc


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", default=None, help="fine-tuning epochs (default: the demo's)")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/compress-overhead.json)")
    a = ap.parse_args()
    main(a.epochs, a.out)
