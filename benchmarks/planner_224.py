"""How fast the exact planner solves torchvision CNNs at 224 px (channels x {fp32, int8}), issue #24.

EfficientNet-Lite0 at 224 px needed 46 s to reach optimal and the 10 s limit dropped the mixed plan.
This times :func:`edgeprune.plan.plan` on torchvision ``mobilenet_v2``, ``efficientnet_b0`` and
``mobilenet_v3_large`` (random-init weights, 1000 classes) with a synthetic cpu-like predictor (the
``CpuLike`` of benchmarks/planner_speed.py: cost per MAC, x1.85 off the multiple of 8, int8 0.6x on wide
layers, a deterministic per-configuration jitter so costs are non-separable), random scores, granularity 8,
budgets 0.7x / 0.5x / 0.35x of the dense predicted latency, a 60 s limit (to see how long optimal takes).

Run: .venv/bin/python benchmarks/planner_224.py [--models mobilenet_v2,...] [--time-limit 60]
     -> benchmarks/results/planner-224.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import torchvision_models
from benchmarks.planner_speed import CpuLike


def main() -> None:
    """Time the planner per model and budget; print a table and write the JSON."""
    from edgeprune.graph import channel_groups
    from edgeprune.plan import PlanConfig, plan

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mobilenet_v2,efficientnet_b0,mobilenet_v3_large")
    ap.add_argument("--budgets", default="0.7,0.5,0.35")
    ap.add_argument("--time-limit", type=float, default=60.0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "planner-224.json"))
    args = ap.parse_args()
    tv = torchvision_models()
    rows = []
    for name in args.models.split(","):
        torch.manual_seed(0)
        model = getattr(tv.models, name)().eval()
        t0 = time.perf_counter()
        graph = channel_groups(model, torch.zeros(1, 3, 224, 224))
        graph_s = time.perf_counter() - t0
        gen = torch.Generator().manual_seed(0)
        scores = {g.id: torch.rand(g.size, generator=gen) for g in graph.prunable}
        for b in args.budgets.split(","):
            cfg = PlanConfig(granularity=8, precisions=("fp32", "int8"), time_limit=args.time_limit)
            t0, c0 = time.perf_counter(), time.process_time()
            p = plan(model, scores, f"latency={b}x", {"cpu-ort": CpuLike()}, cfg, graph=graph)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            s = p.solver
            row = {"model": name, "budget": f"{b}x", "groups": len(graph.prunable), "layers": len(graph.layers),
                   "graph_s": round(graph_s, 2), "plan_wall_s": round(wall, 2), "plan_cpu_s": round(cpu, 2),
                   "solve_s": s.get("solve_s", s.get("wall_s")), "status": s.get("status"), "gap": s.get("mip_gap"), "search": s.get("search"), "time_limited": s.get("time_limited"),
                   "variables": s.get("variables"), "objective": p.objective,
                   "int8_layers": sum(v == "int8" for v in p.precisions.values()), "notes": list(p.notes)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    doc = {"benchmark": "planner-224", "load": os.getloadavg(), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
