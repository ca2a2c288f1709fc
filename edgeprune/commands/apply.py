"""``edgeprune apply``: a plan made elsewhere (``edgeprune plan --out plan.json``, or compress's plan.json) applied
here: prune, quantise, fine-tune, compile and verify on the target. It is ``compress`` with the plan given."""
from __future__ import annotations

import argparse

from edgeprune.commands.compress import add_run_options, show
from edgeprune.commands.data_options import parse_input_shape
from edgeprune.commands.model_options import add_model_source_options
from edgeprune.errors import AccuracyDropped, BadInput, BudgetMissed, VerificationFailed
from edgeprune.ui import UI


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the command."""
    p = sub.add_parser(
        "apply",
        help="apply a saved plan.json: prune, quantise, fine-tune, compile and verify on the target",
        description=("Apply a plan made elsewhere (edgeprune plan --out plan.json on a workstation, or the plan.json "
                     "of a compress run) to the model: prune, quantise, fine-tune, compile and verify on the target, "
                     "and check the plan's budget there on measurement."),
        epilog=(
            "examples:\n"
            "  edgeprune plan --model my_pkg.models:build --target cpu-ort --budget latency=0.5x --out plan.json\n"
            "  edgeprune apply --model my_pkg.models:build --weights trained.pt --plan plan.json --data imgs/ --epochs 1 "
            "--target cpu-ort --out build/small"
        ),
    )
    p.add_argument("--plan", required=True, metavar="plan.json", help="the plan to apply")
    p.add_argument("--model", default=None,
                   help="the dense model the plan was made for (default: the plan's model, with its --model-arg values)")
    add_model_source_options(p)
    p.add_argument("--data", default=None,
                   help="data to fine-tune, calibrate and measure accuracy on (as compress --data); "
                        "default none: no fine-tuning, the engine is checked on random inputs")
    p.add_argument("--input-shape", default=None, help="input shape without data (default: the plan's), e.g. 1,3,224,224")
    p.add_argument("--target", default=None, help="target name or .toml file (default: the plan's first target)")
    p.add_argument("--budget", default=None,
                   help="limits checked on measurement (default: the plan's budget, as far as it applies to --target)")
    add_run_options(p, default_out="build/<model>-<target>-applied")
    p.set_defaults(func=run)
    return p


def budget_for(plan_budget: str, target: str) -> str:
    """The part of the plan's budget that applies to ``target`` (limits for every target, or ``@target`` ones)."""
    from edgeprune.budget import ALL, Budget

    if not plan_budget:
        raise BadInput("the plan records no budget: pass --budget")
    b = Budget.parse(plan_budget)
    limits = {m: {t: lim for t, lim in per.items() if t in (ALL, target)} for m, per in b.limits.items()}
    kept = Budget({m: per for m, per in limits.items() if per}, b.granularity)
    if kept.is_empty():
        raise BadInput(f"the plan's budget ({plan_budget}) sets no limit for {target}: pass --budget")
    return str(kept)


def run(args: argparse.Namespace, ui: UI) -> int:
    """Apply the plan and print the table."""
    from edgeprune.commands.compress import config_from_args
    from edgeprune.models.pruned import read_plan
    from edgeprune.pipeline import compress

    plan = read_plan(args.plan)
    model = args.model or plan.model
    if not model:
        raise BadInput(f"plan {args.plan} does not name its model: pass --model")
    if args.model is None and not args.model_arg and plan.model_args:  # the plan's own model: its arguments too
        args.model_arg = [f"{k}={v}" for k, v in plan.model_args.items()]
    target = args.target or (plan.targets[0] if plan.targets else None)
    if target is None:
        raise BadInput(f"plan {args.plan} names no target: pass --target")
    from edgeprune.config import get_target

    budget = args.budget or budget_for(plan.budget, get_target(target).name)
    data = None if (args.data or "none").lower() == "none" else args.data
    shape = parse_input_shape(args.input_shape) or (plan.input_shape if data is None else None)
    config = config_from_args(args, plan_file=str(args.plan),
                              run_name=None if args.out else f"{str(model).split(':')[-1]}-{target}-applied")
    try:
        result = compress(model, data, target, budget, out=args.out, config=config, input_shape=shape, ui=ui)
    except (BudgetMissed, VerificationFailed, AccuracyDropped) as err:
        res = getattr(err, "result", None)
        if res is not None:
            show(res, ui)
        raise
    if result is None:  # a torchrun rank other than 0: it fine-tuned its shard; rank 0 writes and reports
        return 0
    show(result, ui)
    return 0


__all__ = ["budget_for", "register", "run"]
