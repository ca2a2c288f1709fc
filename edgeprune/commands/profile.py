"""``edgeprune profile``: measure a model's latency look-up table on a target, calibrate and audit the predictor."""
from __future__ import annotations

import argparse

from edgeprune.commands.data_options import add_input_size_option, check_model_input, data_input_shape
from edgeprune.ui import UI


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the command."""
    p = sub.add_parser(
        "profile",
        help="measure per-layer latency tables (LUT) for a model on a target",
        description=(
            "Measure every layer configuration the planner may choose (in x out channels on the target's "
            "granularity, each precision), write PROFILES/TARGET--MODEL--HxW.json (the user cache, or --profiles) atomically (resumable), calibrate "
            "the per-model term on a few whole models, and optionally audit the predictor on N random pruned "
            "configurations. Schema and protocols: docs/profile.md."
        ),
        epilog=(
            "examples:\n"
            "  edgeprune profile --target cpu-ort                     # the device model, once per target\n"
            "  edgeprune profile --target cpu-ort --model resnet56-cifar10 --audit 30\n"
            "  edgeprune profile --target cpu-ort --model resnet20-cifar10 --out /tmp/r20.json --json"
        ),
    )
    p.add_argument("--target", required=True, help="target name (targets/*.toml) or path")
    p.add_argument("--model", default=None,
                   help="registered model name, saved module file, or pkg.mod:function; without it, build the target's "
                        "device cost model (docs/costmodel.md)")
    p.add_argument("--exact", action="store_true",
                   help="measure the model's exhaustive layer table even when a device model exists (small models)")
    p.add_argument("--samples", type=int, default=1200, metavar="N", help="device model: most kernels to measure (default 1200)")
    p.add_argument("--budget-min", type=float, default=18.0, metavar="M", help="device model: time budget in minutes (default 18)")
    p.add_argument("--input-shape", default=None, help="example input shape for a user model, e.g. 1,3,224,224")
    add_input_size_option(p)
    p.add_argument("--out", default=None, help="profile file (default PROFILES/TARGET--MODEL--HxW.json, keyed by the input size)")
    add_profiles_option(p)
    p.add_argument("--audit", type=int, default=0, metavar="N", help="audit the predictor on N random pruned configurations")
    p.add_argument("--calibration", type=int, default=6, metavar="K", help="pruned configurations measured whole to fit the per-model term (default 6)")
    p.add_argument("--grid", choices=["default", "aligned"], default="default", help="'aligned' skips the unaligned probes")
    resume = p.add_mutually_exclusive_group()
    resume.add_argument("--resume", dest="resume", action="store_true", default=True, help="continue an interrupted run in --out (default)")
    resume.add_argument("--fresh", dest="resume", action="store_false", help="measure everything again")
    resume.add_argument("--recalibrate", action="store_true",
                        help="keep the layer tables in --out, measure the whole-model calibration and audit again")
    p.add_argument("--quick", action="store_true", help="short timing protocols (smoke runs; not for checked-in profiles)")
    p.add_argument("--note", action="append", default=[], help="a note stored in the profile (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)
    return p


def add_profiles_option(p: argparse.ArgumentParser) -> None:
    """--profiles DIR, shared by profile, plan and compress."""
    p.add_argument("--profiles", default=None, metavar="DIR",
                   help="folder of latency profiles to read and write (default: $EDGEPRUNE_CACHE_DIR/profiles, "
                        "else ~/.cache/edgeprune/profiles; the profiles shipped with edgeprune are read after it)")


def add_foreign_option(p: argparse.ArgumentParser) -> None:
    """--allow-foreign-profile, shared by plan and compress."""
    p.add_argument("--allow-foreign-profile", action="store_true",
                   help="plan on a profile measured on another device (CPU, ISA, threads or runtime version differ) "
                        "instead of refusing it; better: `edgeprune profile ... --recalibrate` or `--fresh` here")


def run(args: argparse.Namespace, ui: UI) -> int:
    """Profile, then print the summary (or JSON)."""

    from edgeprune.config import get_target
    from edgeprune.errors import BadInput
    from edgeprune.graph import example_input
    from edgeprune.profile import ModelProtocol, TimingProtocol, profile

    if args.audit < 0 or args.calibration < 0:
        raise BadInput("--audit and --calibration must be >= 0")
    target = get_target(args.target)
    if args.model is None:
        from edgeprune.costmodel.command import run_device_model

        return run_device_model(args, target, ui)
    example = None
    if args.input_shape:
        try:
            dims = [int(x) for x in args.input_shape.split(",")]
        except ValueError:
            raise BadInput(f"--input-shape must be comma-separated integers, got {args.input_shape!r}") from None
        example = example_input(None, shape=dims)
    if getattr(args, "input_size", None) is not None:
        check_model_input(args)  # a fixed-size head at this size: one line naming the size it needs
        example = example_input(None, shape=data_input_shape(args))
    from edgeprune.profile import profile_model_name

    model_name = profile_model_name(args.model)  # the name plan and compress look the profile up by
    from edgeprune.costmodel.command import calibrated_profile

    prof = calibrated_profile(args, target, example, model_name, ui)
    prof = prof or profile(
        args.model, example, target, model_name=model_name, grid=args.grid, out=args.out, profiles=args.profiles, resume=args.resume,
        audit=args.audit, ui=ui, calibration=args.calibration, seed=args.seed, notes=args.note, recalibrate=args.recalibrate,
        protocol=TimingProtocol.quick() if args.quick else None,
        model_protocol=ModelProtocol.quick() if args.quick else None,
    )
    d = prof.data
    a = prof.audit
    summary = {
        "path": str(prof.path), "target": prof.target_name, "model": prof.model_name, "unit": prof.unit,
        "records": len(prof.records), "precisions": prof.precisions,
        "dense_latency": d.get("dense_latency"), "calibration": (d.get("calibration") or {}).get("coef"),
        "timings_s": d.get("timings_s"),
        "audit": None if not a else {k: a.get(k) for k in ("n", "median_abs_error", "within_5pct", "within_10pct",
                                                            "aligned", "unaligned", "test_retest", "relative_to_dense",
                                                            "macs_baseline")},
        "notes": d.get("notes"),
        "emulated": prof.emulated,
    }
    ui.result(summary)
    dense = prof.dense_latency
    rows = [
        ("file", str(prof.path)),
        ("layer records", f"{len(prof.records)} ({', '.join(prof.precisions)})"),
        ("dense model", f"{dense.median:.4g} {prof.unit} (p10 {dense.p10:.4g}, p90 {dense.p90:.4g})" if dense else "-"),
        ("profiling time", f"{d.get('timings_s', {}).get('total_this_run', 0):.0f} s this run"),
    ]
    if a:
        tr = a.get("test_retest", {})
        rows += [
            ("audit", f"{a['n']} configurations ({a['aligned']['n']} aligned, {a['unaligned']['n']} unaligned)"),
            ("median |error|", f"{a['median_abs_error']:.1%}"),
            ("within +-5% / +-10%", f"{a['within_5pct']:.0%} / {a['within_10pct']:.0%}"),
            ("aligned: within 5% / 10%", f"{a['aligned'].get('within_5pct', 0):.0%} / {a['aligned'].get('within_10pct', 0):.0%}"),
            ("unaligned: within 5% / 10%", f"{a['unaligned'].get('within_5pct', 0):.0%} / {a['unaligned'].get('within_10pct', 0):.0%}"),
            ("test-retest spread (median)", f"{tr.get('median_spread', 0):.1%} ({tr.get('within_5pct', 0):.0%} of configs within 5%)"),
        ]
        if a.get("relative_to_dense"):
            r = a["relative_to_dense"]
            rows.append(("vs dense: median |err|, within 5%", f"{r['median_abs_error']:.1%}, {r['within_5pct']:.0%}"))
        if a.get("macs_baseline"):
            b = a["macs_baseline"]
            rows.append(("MAC-count line: within 5% / 10%", f"{b['within_5pct']:.0%} / {b['within_10pct']:.0%}"))
    if prof.emulated:
        rows.insert(0, ("EMULATED", "QEMU board: these timings mean nothing, only correctness does"))
    emulated = " (EMULATED: timings mean nothing)" if prof.emulated else ""
    ui.table(f"profile {prof.target_name} / {prof.model_name}{emulated}", ["what", "value"], rows)
    return 0
