"""The device-model side of ``edgeprune profile`` (the command module stays a thin argument parser)."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgeprune.config import Target
    from edgeprune.profile.lut import Profile
    from edgeprune.ui import UI


def run_device_model(args: argparse.Namespace, target: Target, ui: UI) -> int:
    """``edgeprune profile --target T`` (no --model): build or resume the device model, print a summary."""
    from edgeprune.costmodel.measure import BuildConfig, build_device_model
    from edgeprune.errors import BadInput
    from edgeprune.profile.timing import TimingProtocol

    if args.samples < 1 or args.budget_min <= 0:
        raise BadInput("--samples must be >= 1 and --budget-min > 0")
    cfg = BuildConfig(max_samples=args.samples, budget_s=args.budget_min * 60.0, seed=args.seed)
    dm = build_device_model(target, out=args.out, profiles=args.profiles, resume=args.resume, config=cfg, ui=ui,
                            protocol=TimingProtocol.quick() if args.quick else None)
    d = dm.data
    ui.result({"path": str(dm.path), "target": dm.target_name, "samples": len(dm.samples), "complete": dm.complete,
               "rounds": len(d["rounds"]), "cv_error": d.get("cv_error"), "timings_s": d.get("timings_s"),
               "fingerprint": d.get("fingerprint"), "notes": d.get("notes"),
               "emulated": bool(d.get("emulated"))})
    rows = [("file", str(dm.path)), ("kernels measured", str(len(dm.samples))), ("rounds", str(len(d["rounds"]))),
            ("measuring time", f"{d['timings_s'].get('measure', 0):.0f} s in all")]
    rows += [(f"CV median error {k}", f"{v:.1%}") for k, v in sorted((d.get("cv_error") or {}).items())]
    emulated = " (EMULATED: timings mean nothing)" if d.get("emulated") else ""
    ui.table(f"device model {dm.target_name}{emulated}", ["what", "value"], rows)
    return 0


def calibrated_profile(args: argparse.Namespace, target: Target, example: Any, model_name: str, ui: UI) -> Profile | None:
    """With a device model of ``target`` (and no --exact / --recalibrate), calibrate ``--model`` on it when its
    exhaustive table is big (over ``EXACT_PREFERRED`` configurations); else None (the caller measures the table)."""
    from edgeprune.costmodel.calibrate import calibrate_model
    from edgeprune.costmodel.model import find_device_model, load_device_model
    from edgeprune.profile.timing import ModelProtocol

    if args.exact or args.recalibrate:
        return None
    path = find_device_model(target, args.profiles)
    if path is None:
        return None
    from edgeprune.graph import channel_groups
    from edgeprune.profile.profiler import EXACT_PREFERRED, _example_for, _model_and_name, exhaustive_size

    model, _ = _model_and_name(args.model, model_name)
    n = exhaustive_size(channel_groups(model, _example_for(model_name, example)), target)
    if n <= EXACT_PREFERRED:
        ui.log(f"{model_name} has {n:,} layer configurations: measuring its exact table (a minute or two, and more "
               f"accurate than the device model {path})")
        return None
    dm = load_device_model(path, target=target)
    ui.log(f"pricing {model_name} with the device model {path} ({len(dm.samples)} kernels); "
           "calibrating the per-model term on a few whole models (--exact measures the full table instead)")
    return calibrate_model(args.model, example, target, dm, model_name=model_name, out=args.out, profiles=args.profiles,
                           calibration=args.calibration, audit=args.audit, seed=args.seed, notes=tuple(args.note), ui=ui,
                           model_protocol=ModelProtocol.quick() if args.quick else None)
