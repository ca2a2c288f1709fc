"""Oracle benchmark of every importance criterion on ResNet-20 / CIFAR-10.

Removes each of N sampled channels alone (zeroing what it owns, which equals
physical removal), measures the true loss change on held-out test images,
and reports each criterion's Spearman correlation with it, top/bottom-k
overlap and wall time. Scores are computed on training images.

    .venv/bin/python benchmarks/importance_resnet20.py [--channels 128] [--oracle-batches 4] [--batches 6]

Writes benchmarks/results/importance-resnet20.json and .md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgeprune.data import find_shared, load_data
from edgeprune.graph import channel_groups
from edgeprune.importance import list_criteria
from edgeprune.importance.oracle import grade, oracle
from edgeprune.models import load_cifar_checkpoint, load_model
from edgeprune.models.cifar_resnet import CifarResNet

OPTIONS = {"hessian": {"probes": 2}, "hessian-spectral": {"iterations": 4}}
VARIANTS = [
    ("taylor[params=bn]", "taylor", {"params": "bn"}),
    ("taylor-activation[spatial=sum]", "taylor-activation", {"spatial": "sum"}),
    ("sosp-h[signed]", "sosp-h", {"signed": True}),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channels", type=int, default=128)
    ap.add_argument("--oracle-batches", type=int, default=4)
    ap.add_argument("--oracle-batch-size", type=int, default=128)
    ap.add_argument("--batches", type=int, default=6, help="training batches per criterion")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default="", help="comma-separated criteria (default: all)")
    args = ap.parse_args()

    notes = []
    ckpt = find_shared("cifar10-resnet-pretrained/resnet20-12fca82f.th")
    if ckpt is not None:
        model = load_cifar_checkpoint(CifarResNet(3), ckpt).eval()
        weights = str(ckpt)
    else:
        model, weights = load_model("resnet20-cifar10"), "embedded resnet20-12fca82f.th"
        notes.append("shared weights absent: used the embedded copy of the same checkpoint")
    try:
        data = load_data("cifar10-full")
        data_name = "cifar10-full"
    except Exception as err:  # noqa: BLE001 - any failure means: use the demo data
        data = load_data("cifar10-demo")
        data_name = "cifar10-demo"
        notes.append(f"cifar10-full absent ({err}); fell back to the embedded demo data")
        print(notes[-1], file=sys.stderr)
    graph = channel_groups(model, data.test.example())
    t0 = time.perf_counter()
    res = oracle(model, data, graph, n_channels=args.channels, batches=args.oracle_batches, seed=args.seed,
                 batch_size=args.oracle_batch_size)
    print(f"oracle: {len(res.channels)} channels on {res.n_images} test images, base loss {res.base_loss:.4f}, "
          f"{res.seconds:.1f} s", flush=True)
    names = [n for n, _, _ in list_criteria()]
    specs = [(n, n, OPTIONS.get(n, {})) for n in names] + VARIANTS
    if args.only:
        keep = set(args.only.split(","))
        specs = [s for s in specs if s[0] in keep or s[1] in keep]

    def done(g):
        print(f"{g.criterion:34s} spearman {g.spearman:+.3f} |d| {g.spearman_abs:+.3f} top-k {g.topk_overlap:.2f} "
              f"bottom-k {g.bottomk_overlap:.2f} {g.seconds:7.1f} s {g.error}", flush=True)

    grades = grade(specs, model, data, res, graph, batches=args.batches, batch_size=args.batch_size, seed=args.seed, on_done=done)
    total = time.perf_counter() - t0
    flags = {n: (c.needs_data, c.needs_grad, c.paper) for n, c, _ in list_criteria()}
    rows = []
    for (label, name, opts), g in zip(specs, grades):
        rows.append({"criterion": label, "registered_as": name, "options": opts, "spearman": g.spearman,
                     "spearman_abs": g.spearman_abs, "topk_overlap": g.topk_overlap, "bottomk_overlap": g.bottomk_overlap,
                     "k": g.k, "seconds": round(g.seconds, 2), "needs_data": flags[name][0], "needs_grad": flags[name][1],
                     "paper": flags[name][2], "error": g.error})
    grad_rows = [r for r in rows if r["needs_grad"] and r["spearman"] == r["spearman"]]
    best = max(grad_rows, key=lambda r: r["spearman"]) if grad_rows else None
    out = {
        "benchmark": "importance-resnet20",
        "model": "resnet20-cifar10", "weights": weights, "data": data_name,
        "setup": {"oracle_channels": len(res.channels), "oracle_images": res.n_images, "oracle_batches": res.batches,
                  "oracle_batch_size": res.batch_size, "criterion_batches": args.batches, "criterion_batch_size": args.batch_size,
                  "criterion_images": args.batches * args.batch_size, "seed": args.seed,
                  "oracle_split": "test", "criterion_split": "train",
                  "total_prunable_channels": sum(g.size for g in graph.prunable)},
        "oracle": {"base_loss": res.base_loss, "seconds": round(res.seconds, 1), **{k: v for k, v in res.to_json().items() if k in ("channels", "delta")}},
        "results": rows,
        "best_gradient_criterion": best and {"criterion": best["criterion"], "spearman": best["spearman"], "goal": 0.9,
                                             "met": best["spearman"] >= 0.9},
        "notes": notes,
        "host": {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                 "loadavg_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
        "total_seconds": round(total, 1),
    }
    res_dir = ROOT / "benchmarks" / "results"
    res_dir.mkdir(parents=True, exist_ok=True)
    (res_dir / "importance-resnet20.json").write_text(json.dumps(out, indent=1) + "\n")
    lines = [
        "# Importance criteria vs the oracle: ResNet-20, CIFAR-10",
        "",
        f"Oracle: {len(res.channels)} channels sampled from {out['setup']['total_prunable_channels']}, each removed alone; "
        f"true loss change on {res.n_images} held-out test images ({data_name}; base loss {res.base_loss:.4f}). "
        f"Criteria scored on {args.batches * args.batch_size} training images. Seed {args.seed}. "
        "`spearman`: vs the signed loss change; `|d|`: vs its magnitude; top/bottom-k: overlap of the k "
        f"(= {rows[0]['k'] if rows else 0}) most / least important channels.",
        "",
        "| criterion | needs | Spearman | Spearman vs abs | top-k | bottom-k | time (s) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(rows, key=lambda r: -(r["spearman"] if r["spearman"] == r["spearman"] else -9)):
        need = "gradients" if r["needs_grad"] else ("data" if r["needs_data"] else "nothing")
        lines.append(f"| {r['criterion']} | {need} | {r['spearman']:+.3f} | {r['spearman_abs']:+.3f} | {r['topk_overlap']:.2f} | "
                     f"{r['bottomk_overlap']:.2f} | {r['seconds']:.1f} |" + (f" error: {r['error']}" if r["error"] else ""))
    lines += ["", f"Best gradient criterion: {best['criterion']} at {best['spearman']:+.3f} (goal >= 0.9: "
              f"{'met' if best['spearman'] >= 0.9 else 'not met'})." if best else "No gradient criterion ran.", ""]
    lines += [f"Note: {n}" for n in notes]
    lines += [f"Wall time: oracle {res.seconds:.0f} s, total {total:.0f} s, on a shared 2-core CPU "
              f"(load average at the end {out['host']['loadavg_at_end']}); times are comparable only within this run.", ""]
    (res_dir / "importance-resnet20.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
