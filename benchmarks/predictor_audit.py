"""Predictor audit: how close the LUT predictor is to measured whole-model latency (issue 6 goals).

Prints median |error|, the fraction within +-5% / +-10% (all, aligned, unaligned),
the test-retest spread of the measurement itself, and a MAC-count baseline; writes
benchmarks/results/predictor-audit-{model}-{target}.json.

    python benchmarks/predictor_audit.py --model resnet56-cifar10            # the audit stored in the profile
    python benchmarks/predictor_audit.py --model resnet56-cifar10 --fresh 30 # measure 30 new configurations

Goal (printed, not asserted): >= 95% of configurations within +-5% on cpu-ort;
profiling ResNet-56 in <= 3 minutes.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet56-cifar10")
    ap.add_argument("--target", default="cpu-ort")
    ap.add_argument("--profile", default=None, help="profile file (default: TARGET--MODEL.json from the user cache, else the shipped one)")
    ap.add_argument("--fresh", type=int, default=0, metavar="N", help="measure N new random configurations instead of reading the stored audit")
    ap.add_argument("--seed", type=int, default=2000)
    ap.add_argument("--out", default=None, help="results file (default benchmarks/results/predictor-audit-MODEL-TARGET.json)")
    args = ap.parse_args(argv)

    from edgeprune.fileio import write_json
    from edgeprune.models import load_model, model_spec
    from edgeprune.profile import default_profile_path, find_profile, load_profile, run_audit
    from edgeprune.profile.lut import shape_input_size

    spec = model_spec(args.model)
    size = shape_input_size(spec.input_shape) if spec is not None else None
    path = Path(args.profile) if args.profile else (find_profile(args.target, args.model, input_size=size)
                                                    or default_profile_path(args.target, args.model, input_size=size))
    # reading the stored audit needs no device check; measuring a fresh one here does
    prof = load_profile(path, target=args.target, allow_foreign=None if args.fresh else True)
    audit = prof.audit
    if args.fresh or audit is None:
        import torch

        model = load_model(args.model)
        example = torch.zeros(model_spec(args.model).input_shape)
        audit = run_audit(prof, model, example, args.target, args.fresh or 30, seed=args.seed)
    d = prof.data
    t = d.get("timings_s", {})
    tr = audit["test_retest"]
    print(f"predictor audit: {args.model} on {args.target} ({path.name}, measured {d.get('created')}, cpu {d.get('cpu')})")
    if "calibration+audit" in t:
        print(f"  profiling time: layers {t.get('layers', 0):.0f} s; calibration + audit models measured in one batch "
              f"{t['calibration+audit']:.0f} s; {len(prof.records)} layer records")
    else:
        print(f"  profiling time: layers {t.get('layers', 0):.0f} s + calibration {t.get('calibration', 0):.0f} s "
              f"(+ audit {t.get('audit', 0):.0f} s); {len(prof.records)} layer records")
    dense = prof.dense_latency
    if dense:
        print(f"  dense model: {dense.median:.4g} {prof.unit}")
    print(f"  {audit['n']} configurations: median |error| {audit['median_abs_error']:.1%}, "
          f"within +-5% {audit['within_5pct']:.0%}, within +-10% {audit['within_10pct']:.0%} (goal: >= 95% within 5%)")
    for kind in ("aligned", "unaligned"):
        f = audit[kind]
        if f.get("n"):
            print(f"    {kind:9s} ({f['n']:2d}): median |error| {f['median_abs_error']:.1%}, within 5% {f['within_5pct']:.0%}, "
                  f"within 10% {f['within_10pct']:.0%}, mean signed {f['mean_signed_error']:+.1%}")
    print(f"  test-retest (odd vs even interleaved passes): median spread {tr['median_spread']:.1%}, "
          f"{tr['within_5pct']:.0%} of configurations within 5%")
    if audit.get("relative_to_dense"):
        r = audit["relative_to_dense"]
        print(f"  relative to dense: median |error| {r['median_abs_error']:.1%}, within 5% {r['within_5pct']:.0%}, within 10% {r['within_10pct']:.0%}")
    if audit.get("macs_baseline"):
        b = audit["macs_baseline"]
        print(f"  MAC-count line (baseline): median |error| {b['median_abs_error']:.1%}, within 5% {b['within_5pct']:.0%}")
    if audit.get("loadavg"):
        print(f"  load average at audit: {audit['loadavg']} on {d.get('machine', {}).get('cpus')} cpus")
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"predictor-audit-{args.model}-{args.target}.json"
    write_json(out, {"model": args.model, "target": args.target, "profile": str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path),
                     "cpu": d.get("cpu"), "software": d.get("software"), "timings_s": t, "notes": d.get("notes"),
                     "dense_latency": d.get("dense_latency"), "calibration": d.get("calibration", {}).get("coef"),
                     "audit": audit})
    print(f"  wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
