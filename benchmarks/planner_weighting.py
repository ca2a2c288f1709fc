"""Which planner objective and criterion prune ResNet-56 best: a short-recovery proxy (issue 12).

Every variant is cut from the same pretrained ResNet-56 to the *predicted*
cpu-ort latency (the checked-in profile) of Torch-Pruning's uniform L1 model at
``--tp-ratio``, so all variants cost the same on the latency table; then each is
fine-tuned the same short way (``--images`` train images, one epoch, KD from the
headline's cached dense reference) and scored on a fixed random subset of the
test set. Variants:

- ``tp-l1``: Torch-Pruning's uniform ratio with group L1 (the headline's peer);
- ``CRITERION:WEIGHTING[:MAX_PRUNE]``: edgeprune's exact planner with that importance
  criterion and objective weighting (``plan(weighting=...)``): ``uniform`` counts
  each group's retained *share* alike, ``importance`` weighs it by the group's
  total score (the default since this benchmark); ``MAX_PRUNE`` caps the fraction
  of any group removed (``plan(max_prune=...)``).

A proxy, not the headline: one seed, a short fine-tune (differences of a couple
of points are within its noise; the headline's 3-epoch rows are the figures to
quote). Latency is not measured here: the variants are matched on the table.

    .venv/bin/python benchmarks/planner_weighting.py [--images 6000] [--eval 2000]

Writes benchmarks/results/planner-weighting-resnet56.json and .md.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import dense_reference, headline_recipe  # benchmarks/common.py
from headline import tp_prune  # benchmarks/headline.py

from edgeprune.config import Budget, get_target
from edgeprune.data import load_data
from edgeprune.environment import machine_info, versions
from edgeprune.fileio import write_json, write_text
from edgeprune.graph import channel_groups
from edgeprune.importance import importance
from edgeprune.metrics import evaluate
from edgeprune.models import load_model
from edgeprune.plan import PlanConfig, plan
from edgeprune.profile import default_profile_path, find_profile, load_profile, profile_input_size
from edgeprune.prune import prune
from edgeprune.recover import RecoverConfig, recover

VARIANTS = ["tp-l1", "taylor:uniform", "taylor:importance", "taylor-logit:uniform", "taylor-logit:importance",
            "fisher:uniform", "fisher:importance", "taylor-2nd:importance"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet56")
    ap.add_argument("--tp-ratio", type=float, default=0.4, help="Torch-Pruning ratio whose predicted latency every variant gets")
    ap.add_argument("--images", type=int, default=6000, help="train images of the one-epoch fine-tune")
    ap.add_argument("--eval", type=int, default=2000, help="random test images for top-1")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--stem", default=None, help="output file stem (default planner-weighting-MODEL)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    name = f"{args.model}-cifar10"
    tgt = get_target("cpu-ort")
    ds = load_data("cifar10-full")
    example = ds.test.example(1)
    pretrained = load_model(name).eval()
    graph = channel_groups(pretrained, example)
    size = profile_input_size(example)
    pred = load_profile(find_profile(tgt.name, name, input_size=size) or default_profile_path(tgt.name, name, input_size=size),
                        target=tgt).predictor()
    # the headline's dense reference (3 epochs x 15,000 images, labels only) is the teacher
    teacher, _ = dense_reference(pretrained, name, ds, headline_recipe(threads=None))
    dense_ms = pred.model_cost(graph.signatures())
    tp = tp_prune(pretrained, example, args.tp_ratio, "l1", [], tgt.channel_multiple)
    limit_ms = pred.model_cost(channel_groups(tp, example).signatures())
    rng = np.random.default_rng(1234)
    test = ds.test.subset(np.sort(rng.permutation(len(ds.test))[: args.eval]))
    print(f"budget: the predicted latency of torch-pruning L1 at ratio {args.tp_ratio}: {limit_ms:.3f} ms "
          f"({limit_ms / dense_ms:.3f}x of dense {dense_ms:.3f} ms)", flush=True)

    scores: dict[str, dict] = {}
    rows = []
    for variant in args.variants.split(","):
        if variant == "tp-l1":
            model = copy.deepcopy(tp)
        else:
            criterion, weighting, *floor = variant.split(":")  # CRITERION:WEIGHTING[:MAX_PRUNE]
            if criterion not in scores:
                scores[criterion] = importance(pretrained, ds, criterion, graph=graph, batches=8, seed=0)
            p = plan(pretrained, scores[criterion], Budget.parse(f"latency={limit_ms:.5f}ms"), {tgt.name: pred}, graph=graph,
                     example=example, targets=[tgt],
                     config=PlanConfig(model_name=name, precisions=["fp32"], weighting=weighting,
                                       max_prune=float(floor[0]) if floor else None))
            model = prune(pretrained, p.keep, example, graph=graph)
        small = channel_groups(model, example)
        t0 = time.perf_counter()
        recover(model, ds, teacher, RecoverConfig(epochs=1, max_images=args.images, seed=0, threads=1))
        row = {"variant": variant, "top1": evaluate(model.eval(), test),
               "predicted_ratio": pred.model_cost(small.signatures()) / dense_ms,
               "params": sum(t.numel() for t in model.parameters()),
               "widths": {g.id: g.size for g in small.groups}, "finetune_s": time.perf_counter() - t0}
        rows.append(row)
        print(f"{variant:26s} top-1 {row['top1']:6.2f}%  predicted {row['predicted_ratio']:.3f}x  params {row['params']:,}",
              flush=True)

    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    m = machine_info()
    doc = {"model": name, "target": tgt.name, "tp_ratio": args.tp_ratio, "limit_ms_predicted": limit_ms,
           "dense_ms_predicted": dense_ms, "images": args.images, "eval_images": args.eval, "rows": rows,
           "machine": f"{m['cpu']} ({m['cores']} cores, {m['isa']}), python {m['python']}; load average at the end {load:.1f} on {cores} cores",
           "versions": versions(), "wall_s": time.perf_counter() - t_start,
           "protocol": "one seed; 1 epoch of the given train images, KD from the headline's dense reference; "
                       "top-1 on a fixed random test subset; all variants at the same predicted cpu-ort latency"}
    out = Path(args.out)
    stem = args.stem or f"planner-weighting-{args.model}"
    write_json(out / f"{stem}.json", doc)
    kind = "short-recovery proxy" if args.images < 20000 else "recovery proxy, the headline's amount of training"
    lines = [f"# Planner objective and criterion on {name} ({kind})", "",
             (f"All variants at the predicted cpu-ort latency of Torch-Pruning L1 at ratio {args.tp_ratio} "
             f"({limit_ms / dense_ms:.3f}x of dense on the table), then 1 epoch x {args.images} images with KD, "
             f"top-1 on {args.eval} random test images. One seed: a proxy, see the headline for 3-epoch figures."), "",
             "| variant | top-1 | predicted x dense | params | widths (stem stream, stage 2 stream, stage 3 stream) |",
             "|---|---:|---:|---:|---|"]
    for r in rows:
        w = r["widths"]
        streams = [w.get(k) for k in ("conv1", "layer2.0.conv2", "layer3.0.conv2")]
        lines.append(f"| {r['variant']} | {r['top1']:.2f} | {r['predicted_ratio']:.3f} | {r['params']:,} | {streams} |")
    lines += ["", f"Machine: {doc['machine']}. Wall time {doc['wall_s'] / 60:.1f} min."]
    write_text(out / f"{stem}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
