"""Channel analysis (``channel_groups``) of every torchvision classification model at 224 px, random init.

Each model runs in its own subprocess with one torch thread, under an address-space cap (a MemoryError
instead of an out-of-memory kill) and a resident-memory watch (killed and reported above ``--rss-cap-gb``).
Per model: groups, prunable groups, frozen groups with their reasons, seconds, peak RSS, or the one-line error.
Goals (issue #24): every model under 4 GB RSS and 60 s, or a one-line error.

Run: .venv/bin/python benchmarks/graph_zoo.py [--models resnet18,swin_t] [--size 224]
Writes benchmarks/results/graph-zoo.json (``--out`` to change).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "graph-zoo.json"


def one(name: str, size: int) -> dict[str, Any]:
    """Channel analysis of one torchvision model (run inside the capped subprocess)."""
    import torch

    sys.path.insert(0, str(ROOT))
    from benchmarks.common import torchvision_models

    torch.set_num_threads(1)
    tv = torchvision_models()
    from edgeprune.errors import EdgepruneError
    from edgeprune.graph import channel_groups

    torch.manual_seed(0)
    row: dict[str, Any] = {"model": name, "size": size}
    try:
        model = tv.models.get_model(name, weights=None).eval()
    except TypeError:  # inception_v3 / googlenet take aux_logits / init options
        model = tv.models.get_model(name, weights=None, aux_logits=False, init_weights=False).eval()
    row["params_m"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 2)
    x = torch.randn(1, 3, size, size)
    t = time.perf_counter()
    try:
        graph = channel_groups(model, x)
    except EdgepruneError as err:
        row["error"] = str(err)
    else:
        row["groups"] = len(graph.groups)
        row["prunable"] = len(graph.prunable)
        row["frozen"] = {g.id: g.reason for g in graph.groups if not g.prunable}
    row["seconds"] = round(time.perf_counter() - t, 2)
    row["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return row


def run_capped(name: str, size: int, rss_cap_gb: float, as_cap_gb: float, timeout: float) -> dict[str, Any]:
    """``one(name)`` in a subprocess; killed (and reported) above the RSS cap or the timeout."""
    code = (f"import resource, json, sys; cap = int({as_cap_gb} * 2**30); resource.setrlimit(resource.RLIMIT_AS, (cap, cap)); "
            f"sys.path.insert(0, {str(ROOT)!r}); from benchmarks.graph_zoo import one; "
            f"print('ZOO ' + json.dumps(one({name!r}, {size})))")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak, killed = 0, ""
    while proc.poll() is None:
        try:
            with open(f"/proc/{proc.pid}/status") as f:
                rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024
        except (OSError, StopIteration):
            rss = 0
        peak = max(peak, rss)
        if rss > rss_cap_gb * 1024:
            killed = f"killed at {rss:.0f} MB RSS (cap {rss_cap_gb} GB)"
        elif time.perf_counter() - t0 > timeout:
            killed = f"killed after {timeout:.0f} s"
        if killed:
            proc.kill()
            break
        time.sleep(0.05)
    out, err = proc.communicate()
    rows = [json.loads(line[4:]) for line in out.splitlines() if line.startswith("ZOO ")]
    if rows:
        row = rows[0]
        row["peak_rss_mb"] = max(row.get("peak_rss_mb", 0), round(peak, 1))
        return row
    last = [ln for ln in err.strip().splitlines() if ln.strip()][-1:] or [f"exit {proc.returncode}"]
    return {"model": name, "size": size, "error": killed or f"crashed: {last[0][:300]}",
            "seconds": round(time.perf_counter() - t0, 2), "peak_rss_mb": round(peak, 1)}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run the zoo, print one line per model, write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="", help="comma-separated torchvision names (default: every classification model)")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--rss-cap-gb", type=float, default=6.0)
    ap.add_argument("--as-cap-gb", type=float, default=12.0)
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--out", default=str(OUT))
    a = ap.parse_args(argv)
    if a.models:
        names = a.models.split(",")
    else:
        sys.path.insert(0, str(ROOT))
        from benchmarks.common import torchvision_models

        tv = torchvision_models()
        names = tv.models.list_models(module=tv.models)
    rows = []
    for name in names:
        row = run_capped(name, a.size, a.rss_cap_gb, a.as_cap_gb, a.timeout)
        rows.append(row)
        status = row.get("error") or f"{row['groups']} groups, {row['prunable']} prunable, {len(row['frozen'])} frozen"
        print(f"{name:24s} {row['seconds']:7.1f} s {row['peak_rss_mb']:8.0f} MB  {status}", flush=True)
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(a.out).with_suffix(".tmp")
        tmp.write_text(json.dumps({"size": a.size, "rss_cap_gb": a.rss_cap_gb, "models": rows}, indent=1))
        tmp.replace(a.out)
    ok = [r for r in rows if "error" not in r]
    print(f"{len(ok)}/{len(rows)} analysed; over 60 s: {[r['model'] for r in rows if r['seconds'] > 60]}; "
          f"over 4 GB: {[r['model'] for r in rows if r['peak_rss_mb'] > 4096]}")
    return rows


if __name__ == "__main__":
    main()
