"""How long building channel groups and pruning take on torchvision's ResNet-50 (targets: < 5 s, < 2 s).

Run: .venv/bin/python benchmarks/graph_speed.py  (needs torchvision; see tests/conftest.py for the
CPU-torch import workaround, reused here). Writes benchmarks/results/graph-speed.json.
"""
from __future__ import annotations

import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def main(repeats: int = 3, size: int = 224, threads: int = 1) -> dict:
    # one thread: on a shared 2-core machine, two torch threads per process oversubscribe the
    # CPU and the timing measures the neighbours (20 s against 1.3 s at a load average of 12)
    torch.set_num_threads(threads)
    from conftest import (
        import_torchvision,  # declares torchvision's ops for the CPU torch (tests-only helper)
    )

    tv = import_torchvision()
    from edgeprune.graph import channel_groups
    from edgeprune.prune import prune
    from edgeprune.prune.granularity import round_channels

    model = tv.models.resnet50(weights=None).eval()
    x = torch.randn(1, 3, size, size)
    build, cut = [], []
    for r in range(repeats):
        t = time.perf_counter()
        graph = channel_groups(model, x)
        build.append(time.perf_counter() - t)
        gen = torch.Generator().manual_seed(r)
        keep = {}
        for g in graph.prunable:
            k = round_channels(g.size * 0.7, math.lcm(8, g.unit), g.size)
            keep[g.id] = g.expand_units(torch.randperm(g.units, generator=gen)[: k // g.unit].tolist())
        t = time.perf_counter()
        prune(model, keep, graph=graph)
        cut.append(time.perf_counter() - t)
    t = time.perf_counter()
    prune(model, keep, x)  # without a graph: traces again
    cold = time.perf_counter() - t
    res = {
        "model": "torchvision resnet50 (random weights)",
        "input": [1, 3, size, size],
        "groups": len(graph.groups),
        "prunable": len(graph.prunable),
        "channel_groups_s": {"median": statistics.median(build), "runs": build, "target": 5.0},
        "prune_with_graph_s": {"median": statistics.median(cut), "runs": cut, "target": 2.0},
        "prune_without_graph_s": cold,
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
    }
    print(f"resnet50 {size}x{size}: channel_groups {res['channel_groups_s']['median']:.2f} s (target < 5), "
          f"prune {res['prune_with_graph_s']['median']:.2f} s with a graph (target < 2), "
          f"{cold:.2f} s tracing again; {res['prunable']}/{res['groups']} groups prunable")
    out = ROOT / "benchmarks" / "results" / "graph-speed.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(res, indent=2) + "\n")
    tmp.replace(out)
    return res


if __name__ == "__main__":
    main(threads=int(os.environ.get("EP_THREADS", "1")))
