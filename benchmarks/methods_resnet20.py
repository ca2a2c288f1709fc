"""The literature methods on ResNet-20 / CIFAR-10 (embedded demo data), at a budget a shared 2-core CPU affords.

Sections (each a few SGD steps, not a full schedule; every figure is top-1 on
a random ``--eval`` of the demo split's test images, the same for all):

1. deep compression: stored bytes and top-1 at several byte budgets without
   retraining, and the full method (prune, retrain, share, retrain centroids)
   at one budget, with a bit-exact reload of the file;
2. network slimming: BN-scale statistics with and without the L1 penalty, the
   global BN-scale pruning and the fine-tune;
3. SNIP vs random pruning at initialisation (same kept fraction, same steps);
4. rethinking: the pruned architecture fine-tuned vs trained from scratch (same steps);
5. iterative importance pruning: (MACs, predicted latency, top-1) per cycle;
6. low rank: single layers factorised at several ranks, plain truncation vs energy transfer, no training.

    .venv/bin/python benchmarks/methods_resnet20.py [--steps 60] [--eval 1000]

Writes benchmarks/results/methods-resnet20.json and .md (after every section, so a
partial run keeps what it measured).
"""
from __future__ import annotations

import argparse
import copy
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgeprune.data import Dataset, load_data
from edgeprune.fileio import write_json, write_text
from edgeprune.metrics import count_macs, count_params, evaluate, model_bytes
from edgeprune.models import load_model

OUT = ROOT / "benchmarks" / "results" / "methods-resnet20"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def deep_compression(model, data, args, res):
    from edgeprune.methods.deep_compression import deep_compress, load_compressed

    sweep = []
    for kb in (200, 100, 60):
        t = time.perf_counter()
        r = deep_compress(model, data, target_bytes=kb * 1000, bits=5, prune_steps=0, share_steps=0, eval_limit=args.eval)
        sweep.append({"budget_bytes": kb * 1000, "stored_bytes": r.stored_bytes, "ratio": r.ratio, "sparsity": r.sparsity,
                      "top1_dense": r.accuracy["dense"], "top1": r.accuracy["shared"], "seconds": time.perf_counter() - t})
        log(f"  deep compression {kb} KB, no retraining: {r.stored_bytes:,} B ({r.ratio:.1f}x), sparsity "
            f"{r.sparsity:.3f}, top-1 {r.accuracy['shared']:.2f}%")
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        r = deep_compress(model, data, target_bytes=args.dc_kb * 1000, bits=5, prune_steps=args.steps,
                          share_steps=args.steps // 2, lr=0.01, batch_size=64, eval_limit=args.eval, out=d)
        loaded = load_compressed(r.path, load_model("resnet20-cifar10"))
        exact = all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), r.model.state_dict().values()))
        top1_loaded = evaluate(loaded, data.test, args.eval)
    full = r.to_dict()
    full.pop("layers")
    full.update({"retrain_steps": args.steps, "centroid_steps": args.steps // 2, "roundtrip_exact": exact,
                 "top1_reloaded": top1_loaded, "seconds": time.perf_counter() - t})
    log(f"  deep compression {args.dc_kb} KB with retraining: {r.stored_bytes:,} B ({r.ratio:.1f}x), top-1 {r.accuracy}, "
        f"reload exact={exact}")
    res["deep_compression"] = {"sweep_no_retraining": sweep, "full": full,
                               "seconds": sum(s["seconds"] for s in sweep) + full["seconds"],
                               "dense_fp32_bytes": model_bytes(model),
                               "note": "stored bytes, not latency: a dense engine runs the decoded model as fast as the dense one"}


def slimming(model, data, args, res):
    from edgeprune.methods.slimming import scale_stats, slim_keep, sparsity_train
    from edgeprune.prune import prune
    from edgeprune.recover import RecoverConfig, recover

    t = time.perf_counter()
    n_img = args.steps * 64
    l1 = sparsity_train(copy.deepcopy(model), data, l1=args.l1, epochs=1, lr=0.02, batch_size=64, max_images=n_img)
    plain_stats = scale_stats(model)
    l1_stats = scale_stats(l1)
    acc_l1 = evaluate(l1, data.test, args.eval)
    example = data.train.example(1)
    out = {"l1": args.l1, "steps": args.steps, "scales_pretrained": plain_stats, "scales_after_l1": l1_stats,
           "top1_dense": res["dense_top1"], "top1_after_l1": acc_l1, "prune": {}}
    for name, m in (("with_l1", l1), ("without_l1", model)):
        keep, thr, graph = slim_keep(m, 0.4, example, min_keep=0.1)
        small = prune(m, keep, graph=graph)
        acc0 = evaluate(small, data.test, args.eval)
        out["prune"][name] = {"threshold": thr, "params": count_params(small), "macs": count_macs(small, example),
                              "top1_pruned": acc0}
        if name == "with_l1":
            cfg = RecoverConfig(epochs=1, lr=0.02, batch_size=64, max_images=n_img, kd_alpha=0.0)
            small = recover(small, data, None, config=cfg).model
            out["prune"][name]["top1_finetuned"] = evaluate(small, data.test, args.eval)
    out["params_dense"], out["macs_dense"] = count_params(model), count_macs(model, example)
    out["seconds"] = time.perf_counter() - t
    log(f"  slimming: scales {plain_stats['mean']:.3f} -> {l1_stats['mean']:.3f}; pruned 40% of the in-block channels: "
        f"{out['prune']}")
    res["slimming"] = out


def snip(data, args, res):
    from edgeprune.methods._train import reinitialise
    from edgeprune.methods.snip_init import snip_vs_random

    t = time.perf_counter()
    init = reinitialise(load_model("resnet20-cifar10", pretrained=False), seed=0)
    out = snip_vs_random(init, data, keep=args.snip_keep, steps=args.steps, eval_limit=args.eval, lr=0.05, batch_size=64)
    for k in ("snip", "random"):
        dens = out[k].pop("layer_density")
        out[k]["density_first_conv"] = dens.get("conv1")
        out[k]["density_classifier"] = dens.get("linear")
    out["seconds"] = time.perf_counter() - t
    log(f"  SNIP vs random at init (keep {args.snip_keep}, {args.steps} steps): snip {out['snip']['top1']:.2f}% "
        f"random {out['random']['top1']:.2f}%")
    res["snip_vs_random"] = out


def rethinking(model, data, args, res):
    from edgeprune.methods.rethinking import scratch_vs_finetune

    t = time.perf_counter()
    out = scratch_vs_finetune(model, data, keep=0.5, finetune_steps=args.steps, criterion="l1", batch_size=64,
                              eval_limit=args.eval)
    out["seconds"] = time.perf_counter() - t
    log(f"  rethinking (keep 50% of channels, {args.steps} steps each): fine-tune {out['finetune_top1']:.2f}% "
        f"scratch {out['scratch_top1']:.2f}%")
    res["rethinking"] = out


def iterative(model, data, args, res):
    from edgeprune.methods.iterative import MacsPredictor, iterative_prune

    preds = {"macs": MacsPredictor()}
    note = "no cpu-ort profile: MACs only"
    try:
        from edgeprune.profile import find_profile, load_profile

        path = find_profile("cpu-ort", "resnet20-cifar10", input_size=(32, 32))
        if path is None:
            raise FileNotFoundError("no cpu-ort--resnet20-cifar10.json profile")
        prof = load_profile(path, allow_incomplete=True)
        preds["cpu-ort"] = prof.predictor()
        note = f"predicted latency from {path.name}" + ("" if prof.complete else " (incomplete profile)")
    except Exception as err:  # noqa: BLE001 - a profile being re-measured by someone else: fall back to MACs
        note = f"no usable cpu-ort profile ({str(err).splitlines()[0]}): MACs only"
    t = time.perf_counter()
    r = iterative_prune(model, data, budget="macs=0.4x", steps=3, criterion="taylor", predictors=preds,
                        finetune_epochs=args.steps * 64 / len(data.train), lr=0.01, batch_size=64, score_batches=2,
                        eval_limit=args.eval)
    res["iterative"] = {"budget": "macs=0.4x", "cycles": 3, "criterion": "taylor", "finetune_steps_per_cycle": args.steps,
                        "curve": r.curve, "note": note, "seconds": time.perf_counter() - t}
    for p in r.curve:
        log(f"  cycle {p['cycle']}: {p['macs'] / 1e6:.2f} MMAC, predicted {p.get('predicted_cpu-ort')}, top-1 {p['top1']:.2f}%")


def lowrank(model, data, args, res):
    from edgeprune.methods.lowrank import energy_kept, factorize, full_rank

    t = time.perf_counter()
    mods = dict(model.named_modules())
    pick = np.random.default_rng(1).permutation(len(data.test))[: args.lowrank_images]
    x = data.test.normalise(data.test.images[pick])
    y = torch.as_tensor(data.test.labels[pick])
    with torch.no_grad():
        ref = model(x)
    dense_top1 = float(100 * (ref.argmax(1) == y).float().mean())
    rows = []
    for name in ("layer2.1.conv1", "layer3.1.conv2"):
        full = full_rank(mods[name])
        for r in (full * 3 // 4, full // 2, full // 4):
            row = {"layer": name, "rank": r, "full_rank": full, "energy_kept": energy_kept(mods[name], r)}
            for et in ("none", "uniform", "scale"):
                m = factorize(model, {name: r}, et)
                with torch.no_grad():
                    o = m(x)
                row[f"logit_rel_err_{et}"] = float((o - ref).norm() / ref.norm())
                row[f"top1_{et}"] = float(100 * (o.argmax(1) == y).float().mean())
            rows.append(row)
            log(f"  low rank {name} r={r}/{full}: top-1 none {row['top1_none']:.1f} uniform {row['top1_uniform']:.1f} "
                f"scale {row['top1_scale']:.1f}")
    res["lowrank"] = {"images": len(pick), "dense_top1": dense_top1, "rows": rows, "seconds": time.perf_counter() - t,
                      "note": "no fine-tuning; BN statistics as trained"}


def markdown(res: dict) -> str:
    L = [f"# Literature methods on ResNet-20 / CIFAR-10 demo ({res['when']})", "",
         (f"Machine: {res['machine']}, torch threads {res['threads']}; top-1 on {res['eval_images']} test images "
         f"(a class-balanced random subset of the embedded demo split) (dense: {res['dense_top1']:.2f}%). Training budgets are a few dozen SGD steps "
         f"(batch 64), not full schedules: read the comparisons, not the absolute figures."), ""]
    dc = res.get("deep_compression")
    if dc:
        L += ["## Deep compression (stored bytes, not latency)", "",
              (f"Dense fp32 weights: {dc['dense_fp32_bytes']:,} bytes. Pruning threshold q*std per layer, 5-bit k-means "
              "sharing, Huffman-coded indices and position gaps, one .epdc file."), "",
              "| budget | stored bytes | ratio | sparsity | retraining | top-1 |", "|---|---|---|---|---|---|"]
        for s in dc["sweep_no_retraining"]:
            L.append(f"| {s['budget_bytes'] / 1000:.0f} KB | {s['stored_bytes']:,} | {s['ratio']:.1f}x | {s['sparsity']:.3f} | none | {s['top1']:.2f}% |")
        f = dc["full"]
        a = f["accuracy"]
        L.append(f"| {f['target_bytes'] / 1000:.0f} KB | {f['stored_bytes']:,} | {f['ratio']:.1f}x | {f['sparsity']:.3f} | "
                 f"{f['retrain_steps']} + {f['centroid_steps']} steps | {a.get('final', a.get('shared')):.2f}% |")
        L += ["", (f"Full run: top-1 dense {a['dense']:.2f}% -> pruned+retrained {a['pruned']:.2f}% -> shared {a['shared']:.2f}% "
              f"-> centroids retrained {a.get('final', float('nan')):.2f}%; file reloads bit-exactly: {f['roundtrip_exact']} "
              f"(top-1 of the reloaded model {f['top1_reloaded']:.2f}%). Bytes: {f['breakdown']}."), "",
              f"_{dc['note']}._", ""]
    sl = res.get("slimming")
    if sl:
        p = sl["prune"]
        L += ["## Network slimming", "",
              (f"L1 = {sl['l1']} on BN scales for {sl['steps']} steps: mean |gamma| {sl['scales_pretrained']['mean']:.3f} -> "
              f"{sl['scales_after_l1']['mean']:.3f} (median {sl['scales_pretrained']['median']:.3f} -> {sl['scales_after_l1']['median']:.3f}); "
              f"top-1 {sl['top1_dense']:.2f}% -> {sl['top1_after_l1']:.2f}%."), "",
              "| 40% of the in-block channels removed by one global BN-scale threshold (residual stream kept whole) | params | MACs | top-1 pruned | top-1 fine-tuned |",
              "|---|---|---|---|---|",
              f"| dense | {sl['params_dense']:,} | {sl['macs_dense']:,} | {sl['top1_dense']:.2f}% | |"]
        for k, v in p.items():
            L.append(f"| {k.replace('_', ' ')} | {v['params']:,} | {v['macs']:,} | {v['top1_pruned']:.2f}% | "
                     f"{v.get('top1_finetuned', float('nan')):.2f}% |".replace("nan%", "-"))
        L.append("")
    sn = res.get("snip_vs_random")
    if sn:
        L += ["## SNIP vs random pruning at initialisation", "",
              f"Random-init ResNet-20, {sn['keep']:.0%} of conv/linear weights kept, {sn['steps']} SGD steps with the mask fixed:", "",
              "| mask | top-1 | first-conv density | classifier density |", "|---|---|---|---|"]
        for k in ("snip", "random"):
            v = sn[k]
            L.append(f"| {k} | {v['top1']:.2f}% | {v['density_first_conv']:.3f} | {v['density_classifier']:.3f} |")
        L.append("")
    rt = res.get("rethinking")
    if rt:
        L += ["## Rethinking: scratch vs fine-tune", "",
              (f"50% of the channels of every prunable group removed (L1), params {rt['params_dense']:,} -> {rt['params_pruned']:,}; "
              f"top-1 right after pruning {rt['pruned_top1_before']:.2f}%."), "",
              "| | steps | top-1 |", "|---|---|---|",
              f"| fine-tune the inherited weights | {rt['finetune_steps']} | {rt['finetune_top1']:.2f}% |",
              f"| train the same architecture from scratch | {rt['scratch_steps']} | {rt['scratch_top1']:.2f}% |", "",
              (f"Winner at this budget: {rt['winner']} ({abs(rt['finetune_top1'] - rt['scratch_top1']):.1f} points). "
               "Liu et al.'s observation (scratch matches or beats fine-tuning) is for a scratch budget comparable to "
               "the original training (their Scratch-E/B); this is a fine-tuning budget."), ""]
    it = res.get("iterative")
    if it:
        L += ["## Iterative importance pruning", "",
              (f"Budget {it['budget']} in {it['cycles']} cycles (Taylor importance re-estimated each cycle, "
              f"{it['finetune_steps_per_cycle']} fine-tuning steps per cycle); {it['note']}."), "",
              "| cycle | MMACs | params | predicted cpu-ort (ms) | top-1 |", "|---|---|---|---|---|"]
        for p in it["curve"]:
            pred = p.get("predicted_cpu-ort")
            L.append(f"| {p['cycle']} | {p['macs'] / 1e6:.2f} | {p['params']:,} | {'-' if pred is None else f'{pred:.3f}'} | {p['top1']:.2f}% |")
        L.append("")
    lr = res.get("lowrank")
    if lr:
        L += ["## Low rank (single layers, no fine-tuning)", "",
              (f"Top-1 on {lr['images']} random test images (dense {lr.get('dense_top1', float('nan')):.1f}%) with one layer "
              "factorised; energy transfer: none (plain truncation), "
              "uniform (LRPET), scale."), "",
              "| layer | rank | energy kept | top-1 none | top-1 uniform | top-1 scale | logit err none | uniform | scale |",
              "|---|---|---|---|---|---|---|---|---|"]
        for r in lr["rows"]:
            L.append(f"| {r['layer']} | {r['rank']}/{r['full_rank']} | {r['energy_kept']:.3f} | {r['top1_none']:.1f}% | "
                     f"{r['top1_uniform']:.1f}% | {r['top1_scale']:.1f}% | {r['logit_rel_err_none']:.3f} | "
                     f"{r['logit_rel_err_uniform']:.3f} | {r['logit_rel_err_scale']:.3f} |")
        L.append("")
    runs = ", ".join(f"{k} {v['seconds']:.0f} s at {v['at']}" for k, v in res.get("sections_run", {}).items())
    L.append(f"Wall time of the sections: {res.get('total_seconds', 0):.0f} s ({runs}).")
    return "\n".join(L) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60, help="SGD steps (batch 64) per training phase")
    ap.add_argument("--eval", type=int, default=1000, help="test images for every top-1")
    ap.add_argument("--dc-kb", type=int, default=100, help="deep-compression budget (KB) of the full run")
    ap.add_argument("--l1", type=float, default=3e-2, help="slimming L1 weight (large: the budget is a few dozen steps, not 160 epochs)")
    ap.add_argument("--snip-keep", type=float, default=0.05)
    ap.add_argument("--lowrank-images", type=int, default=500)
    ap.add_argument("--only", default="", help="comma-separated sections (deep,slim,snip,rethink,iter,lowrank)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    t0 = time.perf_counter()
    full = load_data("cifar10-demo")
    # the demo test split is ordered by class: evaluate on a class-balanced random subset, not the first N images
    rng = np.random.default_rng(0)
    pick = np.sort(rng.permutation(len(full.test))[: min(args.eval, len(full.test))])
    data = Dataset(full.name, full.train, full.test.subset(pick), full.classes)
    args.eval = None
    model = load_model("resnet20-cifar10").eval()
    res: dict = {}
    if only and OUT.with_suffix(".json").exists():  # a partial re-run updates the sections it runs
        import json

        res = json.loads(OUT.with_suffix(".json").read_text())
        keys = {"deep": "deep_compression", "slim": "slimming", "snip": "snip_vs_random", "rethink": "rethinking",
                "iter": "iterative", "lowrank": "lowrank"}
        runs = res.setdefault("sections_run", {})
        for short, key in keys.items():
            if key in res and short not in runs:
                runs[short] = {"at": res.get("when", "?"), "seconds": round(float(res[key].get("seconds", 0)), 1)}
        res["updated"] = time.strftime("%Y-%m-%d %H:%M")
    res.setdefault("when", time.strftime("%Y-%m-%d %H:%M"))
    res |= {"model": "resnet20-cifar10", "data": "cifar10-demo",
           "machine": f"{platform.processor() or platform.machine()}, shared 2-core CPU", "threads": 1,
           "eval_images": len(data.test), "steps": args.steps}
    res.setdefault("sections_run", {})
    res["dense_top1"] = evaluate(model, data.test, args.eval)
    log(f"dense top-1 {res['dense_top1']:.2f}%")
    sections = [("deep", lambda: deep_compression(model, data, args, res)), ("slim", lambda: slimming(model, data, args, res)),
                ("snip", lambda: snip(data, args, res)), ("rethink", lambda: rethinking(model, data, args, res)),
                ("iter", lambda: iterative(model, data, args, res)), ("lowrank", lambda: lowrank(model, data, args, res))]
    for name, fn in sections:
        if only and name not in only:
            continue
        log(f"section {name}")
        t_sec = time.perf_counter()
        fn()
        res["sections_run"][name] = {"at": time.strftime("%Y-%m-%d %H:%M"), "seconds": round(time.perf_counter() - t_sec, 1)}
        res["total_seconds"] = sum(v["seconds"] for v in res["sections_run"].values())
        write_json(OUT.with_suffix(".json"), res)
        write_text(OUT.with_suffix(".md"), markdown(res))
    log(f"done in {time.perf_counter() - t0:.0f} s; wrote {OUT.with_suffix('.json')} and .md")


if __name__ == "__main__":
    main()
