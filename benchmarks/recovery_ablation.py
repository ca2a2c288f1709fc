"""What recovers a ResNet-56 pruned to 0.33x best, with the headline's amount of training (issue 25, item 2).

One pruned architecture, the headline's edgeprune row: the exact planner's fp32/int8 plan at ``--ratio`` x the
dense model's *predicted* cpu-ort latency (``--scale`` multiplies the ratio, as the headline's candidate ladder
does; pass the scale the headline chose to get its architecture: 1.1 in the 2026-12-06 0.33x run). Every variant
then changes one thing of the headline's recovery recipe (3 epochs x 15,000 train images, SGD + cosine,
lr 0.02, KD from the headline's fine-tuned dense reference at alpha 0.7 and T 4, BN re-estimated first) and
is scored twice on all 10,000 test images: the fine-tuned PyTorch model (fp32) and its engine (edgeprune's
ORT QDQ path, int8 where the plan says: what the headline row ships). Variants:

- ``base``: the headline's recipe, as it is;
- ``lr=X`` / ``kd_alpha=X`` / ``temperature=X`` / ``bn_recalibrate=0`` / ``epochs=X``: one recipe field changed
  (``epochs=6`` is the reference for what twice the training buys);
- ``criterion=NAME``: the same channel counts, the channels chosen by another importance criterion;
- ``max_prune=X``: the planner with a floor (no group loses more than X of its channels), same predicted budget;
- ``iterative``: prune half-way (every group's count half-way between dense and the plan), fine-tune half the
  images, re-score the fine-tuned model, prune to the plan's counts, fine-tune the other half.

One seed per variant: the headline's seeds give the spread a difference must exceed
(``headline-resnet56-cpu-ort-0.33x.json``, the edgeprune row's ``top1_std``). Latency is not measured here:
all variants but ``max_prune`` have the same architecture, and that one the same predicted latency.

    .venv/bin/python benchmarks/recovery_ablation.py [--scale 1.0] [--variants base,lr=0.05,...]

Writes benchmarks/results/recovery-ablation-resnet56-0.33x.json and .md (rows appended as they finish, so an
interrupted run keeps what it measured and a rerun skips variants already in the file).
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import dense_reference, headline_recipe  # benchmarks/common.py
from headline import build_engine, figures  # benchmarks/headline.py

from edgeprune.config import Budget, get_target
from edgeprune.data import load_data
from edgeprune.environment import machine_info, versions
from edgeprune.fileio import read_json, write_json, write_text
from edgeprune.graph import channel_groups
from edgeprune.importance import importance
from edgeprune.metrics import evaluate
from edgeprune.models import load_model
from edgeprune.pipeline.search import keep_from_counts
from edgeprune.plan import PlanConfig, plan
from edgeprune.profile import load_profile, local_profile
from edgeprune.prune import prune
from edgeprune.prune.granularity import round_channels
from edgeprune.recover import RecoverConfig, recover

VARIANTS = ("base", "lr=0.05", "lr=0.01", "kd_alpha=0.0", "kd_alpha=0.9", "temperature=2", "iterative",
            "criterion=l1", "max_prune=0.7", "bn_recalibrate=0", "epochs=6")
RECIPE_FIELDS = {"lr": float, "kd_alpha": float, "temperature": float, "bn_recalibrate": lambda v: bool(int(v)),
                 "epochs": float}


def log(msg: str) -> None:
    print(f"[ablation {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Setup:
    """What every variant shares: data, dense reference (teacher), graph, scores, predictor and the base plan."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.name = f"{args.model}-cifar10"
        self.tgt = get_target("cpu-ort")
        self.ds = load_data("cifar10-full")
        self.example = self.ds.test.example(1)
        self.pretrained = load_model(self.name).eval()
        self.rc = headline_recipe(seed=args.seed)
        self.teacher, _ = dense_reference(self.pretrained, self.name, self.ds, replace(self.rc, seed=0), log=log)
        self.graph = channel_groups(self.pretrained, self.example)
        self.pred = load_profile(local_profile(self.pretrained, self.tgt, self.name, example=self.example),
                                 target=self.tgt).predictor()
        self.calib = self.ds.train.sample(256, args.seed)
        self._scores: dict[str, dict] = {}
        self.base_plan = self.plan(None)

    def scores(self, criterion: str) -> dict:
        """Channel importance of the pretrained model (cached per criterion)."""
        if criterion not in self._scores:
            self._scores[criterion] = importance(self.pretrained, self.ds, criterion, graph=self.graph, batches=8,
                                                 seed=self.args.seed)
        return self._scores[criterion]

    def plan(self, max_prune: float | None) -> Any:
        """The plan at the budget with ``--precisions`` (the headline's edgeprune candidate at ``--scale``)."""
        ratio = self.args.ratio * self.args.scale
        return plan(self.pretrained, self.scores(self.args.criterion), Budget.parse(f"latency={ratio:.4f}x"),
                    {self.tgt.name: self.pred}, graph=self.graph, example=self.example, targets=[self.tgt],
                    config=PlanConfig(model_name=self.name, precisions=self.args.precisions.split(","),
                                      max_prune=max_prune))


def run_variant(s: Setup, variant: str) -> dict[str, Any]:
    """Prune, fine-tune and score one variant; the row of the results table."""
    key, _, value = variant.partition("=")
    rc, p = s.rc, s.base_plan
    counts, keep = p.widths, p.keep
    if key in RECIPE_FIELDS:
        rc = replace(rc, **{key: RECIPE_FIELDS[key](value)})
    elif key == "criterion":
        keep = keep_from_counts(s.graph, s.scores(value), counts)
    elif key == "max_prune":
        p = s.plan(float(value))
        counts, keep = p.widths, p.keep
    elif key not in ("base", "iterative"):
        raise SystemExit(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    t0 = time.perf_counter()
    if key == "iterative":
        model = iterative(s, counts, rc)
    else:
        model = prune(s.pretrained, keep, s.example, graph=s.graph)
        recover(model, s.ds, s.teacher, rc)
    model.eval()
    fp32_layers = [n for n, v in dict(p.precisions).items() if v != "int8"]
    engine = build_engine(model, s.tgt, Path(s.args.work) / variant.replace("=", "-"), s.example, fp32_layers, s.calib)
    params, macs = figures(model, s.example)
    row = {"variant": variant, "top1_int8": evaluate(engine, s.ds.test, batch_size=250),
           "top1_fp32": evaluate(model, s.ds.test), "params": params, "macs": macs,
           "predicted_ratio": p.targets[s.tgt.name]["predicted"] / p.targets[s.tgt.name]["dense"],
           "int8_layers": f"{sum(v == 'int8' for v in dict(p.precisions).values())}/{len(dict(p.precisions))}",
           "recipe": {k: getattr(rc, k) for k in ("epochs", "max_images", "lr", "kd_alpha", "temperature", "bn_recalibrate")},
           "finetune_s": round(time.perf_counter() - t0, 1)}
    return row


def iterative(s: Setup, counts: dict[str, int], rc: RecoverConfig) -> torch.nn.Module:
    """Half-way prune, half the training, re-score, prune to ``counts``, the other half of the training."""
    m = max(1, s.tgt.channel_multiple)
    mid = {g.id: round_channels((g.size + counts.get(g.id, g.size)) / 2, m, g.size) for g in s.graph.prunable}
    half = replace(rc, epochs=rc.epochs / 2)
    model = prune(s.pretrained, keep_from_counts(s.graph, s.scores(s.args.criterion), mid), s.example, graph=s.graph)
    recover(model, s.ds, s.teacher, half)
    graph = channel_groups(model.eval(), s.example)
    missing = {g.id for g in s.graph.prunable} - {g.id for g in graph.prunable}
    if missing:  # group ids are layer names, which pruning keeps; a mismatch would silently keep everything
        raise RuntimeError(f"groups {sorted(missing)[:3]} of the plan are not in the half-way pruned model")
    scores = importance(model, s.ds, s.args.criterion, graph=graph, batches=8, seed=s.args.seed + 1)
    model = prune(model, keep_from_counts(graph, scores, {g.id: counts.get(g.id, g.size) for g in graph.prunable}),
                  s.example, graph=graph)
    recover(model, s.ds, s.teacher, replace(half, seed=rc.seed + 1))
    return model


def write(out: Path, stem: str, doc: dict[str, Any]) -> None:
    """The JSON and the markdown table (rewritten after every variant)."""
    write_json(out / f"{stem}.json", doc)
    base = next((r for r in doc["rows"] if r["variant"] == "base"), None)
    lines = [f"# Recovery ablation: {doc['model']} pruned to {doc['ratio']:g}x (the headline's edgeprune plan), one seed each", "",
             doc["protocol"], "",
             "| variant | top-1 int8 engine (%) | vs base (pt) | top-1 fp32 PyTorch (%) | predicted x dense | params | MACs | fine-tune (s) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in doc["rows"]:
        d = f"{r['top1_int8'] - base['top1_int8']:+.2f}" if base else ""
        lines.append(f"| {r['variant']} | {r['top1_int8']:.2f} | {d} | {r['top1_fp32']:.2f} | {r['predicted_ratio']:.3f} | "
                     f"{r['params']:,} | {r['macs']:,} | {r['finetune_s']:.0f} |")
    lines += ["", f"Machine: {doc['machine']}.", ""]
    write_text(out / f"{stem}.md", "\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet56")
    ap.add_argument("--ratio", type=float, default=0.33)
    ap.add_argument("--scale", type=float, default=1.0, help="ratio multiplier of the plan (the headline's chosen candidate)")
    ap.add_argument("--criterion", default="taylor-logit")
    ap.add_argument("--precisions", default="fp32,int8", help="the planner's precisions (the headline's mixed candidates)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--work", default="/tmp/edgeprune-ablation", help="scratch folder for the int8 engines")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    out, stem = Path(args.out), f"recovery-ablation-{args.model}-{args.ratio:g}x"
    old = out / f"{stem}.json"
    rows = read_json(old, "ablation results")["rows"] if old.exists() else []
    s = Setup(args)
    m = machine_info()
    doc = {"model": s.name, "target": s.tgt.name, "ratio": args.ratio, "scale": args.scale, "criterion": args.criterion,
           "seed": args.seed, "rows": rows, "versions": versions(),
           "machine": f"{m['cpu']} ({m['cores']} cores, {m['isa']}), one training thread",
           "protocol": (f"Each variant changes one thing of the headline's recipe (3 epochs x 15,000 images, lr 0.02, KD alpha 0.7 "
                        f"T 4 from the fine-tuned dense reference, BN re-estimated first) on the plan at {args.ratio * args.scale:.3f}x "
                        f"predicted ({args.criterion}); top-1 on all 10,000 test images; one seed (a difference must exceed the "
                        "headline's seed spread to count).")}
    done = {r["variant"] for r in rows}
    for variant in [v.strip() for v in args.variants.split(",") if v.strip()]:
        if variant in done:
            log(f"{variant}: already in {old.name}, skipped")
            continue
        log(f"{variant} ...")
        row = run_variant(s, variant)
        log(f"{variant}: int8 {row['top1_int8']:.2f}%, fp32 {row['top1_fp32']:.2f}% ({row['finetune_s']:.0f} s)")
        rows.append(row)
        write(out, stem, doc)


if __name__ == "__main__":
    main()
