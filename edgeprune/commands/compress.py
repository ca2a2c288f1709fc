"""``edgeprune compress``: every step, from a trained model to a verified engine under a budget."""
from __future__ import annotations

import argparse
import re

from edgeprune.commands.profile import add_foreign_option, add_profiles_option
from edgeprune.errors import BadInput, BudgetMissed, VerificationFailed
from edgeprune.ui import UI


def add_model_data_options(p: argparse.ArgumentParser, default_model: str | None = "resnet20-cifar10",
                           default_data: str | None = "cifar10-demo") -> None:
    """--model, --data, --input-shape, shared by commands that take a model."""
    p.add_argument("--model", default=default_model,
                   help="registered name (resnet20-cifar10), saved full module (model.pt) or factory pkg.mod:function")
    p.add_argument("--data", default=default_data,
                   help="cifar10-demo (embedded), cifar10-full (../shared/data), an .npz, or a folder of class sub-folders; 'none' for no data")
    p.add_argument("--input-shape", default=None, help="input shape when there is no data, e.g. 1,3,32,32")


def parse_input_shape(text: str | None) -> tuple[int, ...] | None:
    """'1,3,32,32' -> (1, 3, 32, 32)."""
    if text is None:
        return None
    if not re.fullmatch(r"\s*\d+(\s*[,x]\s*\d+)*\s*", text):
        raise BadInput(f"cannot parse --input-shape {text!r} (expected e.g. 1,3,32,32)")
    return tuple(int(v) for v in re.split(r"[,x]", text.replace(" ", "")))


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
            "  edgeprune compress --model my_pkg.models:build --data imgs/ --budget latency=0.5x,bytes=1MB --json"
        ),
    )
    add_model_data_options(p)
    add_compress_options(p)
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
    p.add_argument("--out", default=None, help="output folder (default build/<model>-<target>)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its checkpoints in --out")
    p.add_argument("--allow-head-mismatch", action="store_true",
                   help="go on (with a warning) when the classifier has more outputs than the data has classes")
    add_profiles_option(p)
    add_foreign_option(p)


def config_from_args(args: argparse.Namespace):
    """CompressConfig from parsed flags."""
    from edgeprune.pipeline import CompressConfig
    from edgeprune.profile.timing import TimingProtocol

    if args.epochs < 0:
        raise BadInput(f"--epochs must be >= 0, got {args.epochs}")
    if args.lr <= 0:
        raise BadInput(f"--lr must be positive, got {args.lr}")
    if args.eval_limit is not None and args.eval_limit < 1:
        raise BadInput(f"--eval-limit must be >= 1, got {args.eval_limit}")
    quick = {"protocol": TimingProtocol.quick(), "final_repeats": 1} if args.quick else {}
    return CompressConfig(**quick, eval_limit=args.eval_limit, criterion=args.criterion, planner=args.planner,
                          weighting=args.weighting, max_prune=args.max_prune, epochs=args.epochs, kd=not args.no_kd,
                          lr=args.lr, seed=args.seed, resume=args.resume, train_device=args.train_device,
                          profiles=args.profiles, allow_foreign_profile=getattr(args, "allow_foreign_profile", False),
                          allow_head_mismatch=getattr(args, "allow_head_mismatch", False))


def run(args: argparse.Namespace, ui: UI) -> int:
    """Run compress and print the table."""
    from edgeprune.pipeline import compress

    data = None if (args.data or "").lower() == "none" else args.data
    try:
        result = compress(args.model, data, args.target, args.budget, out=args.out, config=config_from_args(args),
                          input_shape=parse_input_shape(args.input_shape), ui=ui)
    except (BudgetMissed, VerificationFailed) as err:
        res = getattr(err, "result", None)
        if res is not None:
            show(res, ui)
        raise
    show(result, ui)
    return 0


def show(result, ui: UI) -> None:
    """Print the summary table (or the JSON report)."""
    ui.result(result.report)
    ui.table(f"{result.report['model']} on {result.report['target']} (budget {result.budget})",
             ["", "dense", "compressed", "change"], result.table_rows())
    for line in result.budget_detail:
        ui.log(("[green]" if "met" in line and "MISSED" not in line else "[red]") + line + "[/]")
    from edgeprune.verify import VerifyReport

    ui.log(f"engine check {'passed' if result.verify.get('passed') else 'FAILED'}: {VerifyReport(**result.verify).summary()}")
    html = result.out_dir / "report.html"
    if html.exists():
        ui.log(f"report: {html}  (open it in a browser)")
    files = sorted(p.name + ("/" if p.is_dir() else "") for p in result.out_dir.iterdir() if p.name != "state")
    ui.log(f"wrote {result.out_dir}/ ({', '.join(files)})")
