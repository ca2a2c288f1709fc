"""``edgeprune compress``: every step, from a trained model to a verified engine under a budget."""
from __future__ import annotations

import argparse

from edgeprune.commands.config_file import add_config_option, resolve_settings
from edgeprune.commands.data_options import (
    add_model_data_options,
    check_model_input,
    cli_data,
    data_input_shape,
    report_skipped,
)
from edgeprune.commands.model_options import add_model_source_options
from edgeprune.commands.profile import add_foreign_option, add_profiles_option
from edgeprune.errors import AccuracyDropped, BadInput, BudgetMissed, VerificationFailed
from edgeprune.ui import UI


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the command."""
    p = sub.add_parser(
        "compress",
        help="profile, plan, prune, fine-tune, compile and verify under a budget",
        description="Compress a model for a target under a budget measured on the target itself.",
        epilog=(
            "examples:\n"
            "  edgeprune compress --model resnet20-cifar10 --target cpu-ort --budget latency=0.6x\n"
            "  edgeprune compress --model resnet56-cifar10 --data cifar10-full --budget latency=1.2ms --epochs 3\n"
            "  edgeprune compress --model my_pkg.models:build --data imgs/ --budget latency=0.5x,bytes=1MB --json\n"
            "  torchrun --nproc-per-node 4 -m edgeprune compress --model my_pkg.models:build --data imgs/ --budget "
            "latency=0.5x   # DDP fine-tuning; rank 0 measures and writes (docs/recover.md)"
        ),
    )
    add_model_data_options(p)
    add_model_source_options(p)
    add_compress_options(p)
    add_config_option(p)  # last: every option above can come from --config FILE.toml
    p.set_defaults(func=run)
    return p


def add_compress_options(p: argparse.ArgumentParser, default_budget: str = "latency=0.6x") -> None:
    """Options shared by compress and demo."""
    p.add_argument("--target", default="cpu-ort", help="target name (edgeprune targets) or a target .toml file")
    p.add_argument("--budget", default=default_budget,
                   help="limits: latency=0.6x | latency=1.2ms | latency=250kcycles (simulated targets: vta-pynq), "
                        "bytes=2MB, memory=64kB (peak activations), macs=20M, granularity=8")
    p.add_argument("--criterion", default="fisher", help="importance criterion (default fisher; edgeprune importance --list)")
    p.add_argument("--max-prune", type=float, default=None, metavar="FRACTION",
                   help="remove at most this fraction of any channel group (e.g. 0.5; default: no floor)")
    p.add_argument("--weighting", default="importance", choices=["importance", "uniform"],
                   help="milp objective: weigh each channel group by its total importance (default) or count every group alike")
    p.add_argument("--planner", default="auto", choices=["auto", "milp", "uniform"],
                   help="milp: exact planner on the latency table; uniform: one keep ratio searched on measurement")
    p.add_argument("--time-limit", type=float, default=10.0, metavar="SECONDS",
                   help="milp solver time limit per plan (default 10); a plan cut short by it says so")
    p.add_argument("--freeze", action="append", default=[], metavar="LAYER",
                   help="layer name or glob (features.0*) whose channel groups are never pruned (repeatable)")
    add_run_options(p)


def add_run_options(p: argparse.ArgumentParser, default_out: str = "build/<model>-<target>") -> None:
    """What a run does after planning (guard, fine-tuning, timing, output), shared by compress, demo and apply."""
    p.add_argument("--max-drop", default=None, metavar="DROP",
                   help="accuracy guard: exit 1 (files still written) when top-1 drops more than this: 1pt (points; a "
                        "bare number too) or 0.5%% (of the dense top-1)")
    p.add_argument("--epochs", type=float, default=2.0, help="fine-tuning epochs (0 to skip)")
    p.add_argument("--no-kd", action="store_true", help="fine-tune on labels only (no distillation from the dense model)")
    p.add_argument("--lr", type=float, default=0.02, help="fine-tuning learning rate")
    p.add_argument("--train-device", default=None, metavar="DEVICE",
                   help="torch device to fine-tune on, e.g. cuda or cuda:1 (default: cpu); profiling and engines stay on the target")
    p.add_argument("--seed", type=int, default=0, help="random seed (runs with one seed agree)")
    p.add_argument("--eval-limit", type=int, default=None, metavar="N",
                   help="evaluate top-1 on the first N test images (default: all)")
    p.add_argument("--quick", action="store_true",
                   help="short timing protocol and one final interleaved repeat (tests, smoke runs; noisier latency)")
    p.add_argument("--out", default=None, help=f"output folder (default {default_out})")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its checkpoints in --out")
    p.add_argument("--allow-head-mismatch", action="store_true",
                   help="go on (with a warning) when the classifier has more outputs than the data has classes")
    add_profiles_option(p)
    add_foreign_option(p)


def config_from_args(args: argparse.Namespace, **extra):
    """CompressConfig from parsed flags (flags a command does not have keep the config's defaults)."""
    from edgeprune.models import parse_model_args
    from edgeprune.pipeline import CompressConfig
    from edgeprune.profile.timing import TimingProtocol

    if args.epochs < 0:
        raise BadInput(f"--epochs must be >= 0, got {args.epochs}")
    if args.lr <= 0:
        raise BadInput(f"--lr must be positive, got {args.lr}")
    if not getattr(args, "time_limit", 1.0) > 0:
        raise BadInput(f"--time-limit must be positive, got {args.time_limit:g}")
    if args.eval_limit is not None and args.eval_limit < 1:
        raise BadInput(f"--eval-limit must be >= 1, got {args.eval_limit}")
    quick = {"protocol": TimingProtocol.quick(), "final_repeats": 1} if args.quick else {}
    planning = {k: getattr(args, k) for k in ("criterion", "planner", "weighting", "max_prune", "time_limit")
                if hasattr(args, k)}
    return CompressConfig(**quick, **planning, eval_limit=args.eval_limit, epochs=args.epochs, kd=not args.no_kd,
                          lr=args.lr, seed=args.seed, resume=args.resume, train_device=args.train_device,
                          profiles=args.profiles, allow_foreign_profile=getattr(args, "allow_foreign_profile", False),
                          model_args=parse_model_args(getattr(args, "model_arg", None)),
                          weights=getattr(args, "weights", None), freeze=tuple(getattr(args, "freeze", None) or ()),
                          max_drop=getattr(args, "max_drop", None),
                          allow_head_mismatch=getattr(args, "allow_head_mismatch", False), **extra)


def run(args: argparse.Namespace, ui: UI) -> int:
    """Run compress and print the table."""
    from edgeprune.pipeline import compress

    resolve_settings(args)  # --config FILE.toml under the flags typed
    data = cli_data(args)
    input_shape = data_input_shape(args)
    check_model_input(args)
    try:
        result = compress(args.model, data, args.target, args.budget, out=args.out, config=config_from_args(args),
                          input_shape=input_shape, ui=ui)
    except (BudgetMissed, VerificationFailed, AccuracyDropped) as err:
        res = getattr(err, "result", None)
        if res is not None:
            show(res, ui)
        raise
    finally:
        report_skipped(data, args.data, ui)
    if result is None:  # a torchrun rank other than 0: it fine-tuned its shard; rank 0 writes and reports
        return 0
    show(result, ui)
    return 0


def show(result, ui: UI) -> None:
    """Print the summary table (or the JSON report)."""
    ui.result(result.report)
    ui.table(f"{result.report['model']} on {result.report['target']} (budget {result.budget})",
             ["", "dense", "compressed", "change"], result.table_rows())
    for line in result.budget_detail:
        ui.log(("[green]" if "met" in line and "MISSED" not in line else "[red]") + line + "[/]")
    guard = result.report.get("accuracy_guard")
    if guard is not None:
        ok = guard["passed"]
        drop = "not measured" if guard["drop_pt"] is None else f"{guard['drop_pt']:.2f} pt"
        ui.log(f"{'[green]' if ok else '[red]'}accuracy guard: top-1 drop {drop} <= {guard['allowed_pt']:.2f} pt "
               f"(--max-drop {guard['max_drop']}): {'met' if ok else 'MISSED'}[/]")
    from edgeprune.verify import VerifyReport

    ui.log(f"engine check {'passed' if result.verify.get('passed') else 'FAILED'}: {VerifyReport(**result.verify).summary()}")
    html = result.out_dir / "report.html"
    if html.exists():
        ui.log(f"report: {html}  (open it in a browser)")
    files = sorted(p.name + ("/" if p.is_dir() else "") for p in result.out_dir.iterdir() if p.name != "state")
    ui.log(f"wrote {result.out_dir}/ ({', '.join(files)})")
