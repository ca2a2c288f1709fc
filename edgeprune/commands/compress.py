"""``edgeprune compress``: every step, from a trained model to a verified engine under a budget."""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from edgeprune.commands.config_file import add_config_option, resolve_settings
from edgeprune.commands.profile import add_foreign_option, add_profiles_option
from edgeprune.errors import AccuracyDropped, BadInput, BudgetMissed, VerificationFailed
from edgeprune.ui import UI


def add_model_data_options(p: argparse.ArgumentParser, default_model: str | None = "resnet20-cifar10",
                           default_data: str | None = None) -> None:
    """--model, --data, --input-shape and the data flags (--input-size, --mean, --std, --workers)."""
    p.add_argument("--model", default=default_model,
                   help="registered name (resnet20-cifar10), factory pkg.mod:function (with --model-arg, --weights), "
                        "torchvision:NAME, timm:NAME, efficientnet-lite:lite0 (ImageNet weights), "
                        "or a module saved with torch.save (model.pt)")
    p.add_argument("--data", default=default_data,
                   help="a folder of class sub-folders (images of any size; train/ + val/ used as is), an .npz, "
                        "cifar10-demo (embedded), cifar10-full (../shared/data), or 'none' for no data. Default: "
                        "a registered model's own set; required for your own model")
    p.add_argument("--input-shape", default=None, help="input shape when there is no data, e.g. 1,3,32,32")
    add_data_format_options(p)


def add_input_size_option(p: argparse.ArgumentParser) -> None:
    """--input-size N, shared by every command that takes a model."""
    p.add_argument("--input-size", type=int, default=None, metavar="N",
                   help="square input size: image folders are resized + centre-cropped (eval) or random-resized-cropped "
                        "+ flipped (training) to it (default 224 for a folder, 32 for the CIFAR sets)")


def add_data_format_options(p: argparse.ArgumentParser) -> None:
    """--input-size, --mean, --std, --workers: how a --data folder is read."""
    add_input_size_option(p)
    p.add_argument("--mean", default=None, metavar="R,G,B",
                   help="normalisation mean on the 0-1 scale (default ImageNet 0.485,0.456,0.406)")
    p.add_argument("--std", default=None, metavar="R,G,B", help="normalisation std (default ImageNet 0.229,0.224,0.225)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="processes decoding a --data folder (default min(2, CPUs); 0 decodes in the main process)")


def parse_input_shape(text: str | None) -> tuple[int, ...] | None:
    """'1,3,32,32' -> (1, 3, 32, 32)."""
    if text is None:
        return None
    if not re.fullmatch(r"\s*\d+(\s*[,x]\s*\d+)*\s*", text):
        raise BadInput(f"cannot parse --input-shape {text!r} (expected e.g. 1,3,32,32)")
    return tuple(int(v) for v in re.split(r"[,x]", text.replace(" ", "")))


def parse_channels(text: str | None, flag: str) -> tuple[float, float, float] | None:
    """'0.5,0.5,0.5' -> (0.5, 0.5, 0.5): three floats, one per colour channel."""
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise BadInput(f"cannot parse {flag} {text!r} (expected 3 comma-separated numbers, e.g. 0.485,0.456,0.406)")
    return values  # type: ignore[return-value]


_FIXED_SIZE_SETS = {"cifar10-demo": 32, "demo": 32, "cifar10-full": 32, "cifar10": 32}
NO_DATA_HINT = "--data DIR (class folders), --data X.npz, or --data none to skip accuracy"


def cli_model(args: argparse.Namespace):
    """The model the flags name (--model with --model-arg and --weights)."""
    from edgeprune.models import load_model

    return load_model(args.model, args=getattr(args, "model_arg", None), weights=getattr(args, "weights", None))


def data_spec(args: argparse.Namespace) -> str | None:
    """What --data names, with its default: a registered model's own set; your own model must say (None = no data)."""
    from edgeprune.models import model_spec

    spec = getattr(args, "data", None)
    if spec is None:
        ms = model_spec(args.model) if isinstance(args.model, str) else None
        if ms is None:

            cli_model(args)  # a model that does not load says so first
            raise BadInput(f"your own model needs data: pass {NO_DATA_HINT}")
        spec = f"{ms.dataset}-demo" if ms.dataset == "cifar10" else (ms.dataset or "cifar10-demo")
    return None if spec.lower() == "none" else spec


def is_folder(spec: str | None) -> bool:
    """True when a --data value names an image folder."""
    return spec is not None and Path(spec).is_dir()


def folder_config(args: argparse.Namespace):
    """The FolderConfig of the data flags."""
    from edgeprune.data.folder import DEFAULT_INPUT_SIZE, IMAGENET_MEAN, IMAGENET_STD, FolderConfig

    return FolderConfig(input_size=getattr(args, "input_size", None) or DEFAULT_INPUT_SIZE,
                        mean=parse_channels(getattr(args, "mean", None), "--mean") or IMAGENET_MEAN,
                        std=parse_channels(getattr(args, "std", None), "--std") or IMAGENET_STD,
                        workers=getattr(args, "workers", None), seed=getattr(args, "seed", 0) or 0)


def data_input_size(args: argparse.Namespace) -> int | None:
    """The square input size the flags imply: --input-size, else 224 when --data is a folder, else None (the data's own)."""
    size = getattr(args, "input_size", None)
    if getattr(args, "input_shape", None) is not None and size is not None:
        raise BadInput("give --input-shape or --input-size, not both")
    if size is not None or not is_folder(getattr(args, "data", None)):
        return size
    return folder_config(args).input_size


def data_input_shape(args: argparse.Namespace) -> tuple[int, ...] | None:
    """The example input shape: --input-shape, else (1, 3, N, N) from --input-size or a folder's default size."""
    size = data_input_size(args)
    if size is not None:
        return (1, 3, size, size)
    return parse_input_shape(getattr(args, "input_shape", None))


def cli_data(args: argparse.Namespace, stream: bool = True):
    """The data the flags name: None (--data none), ``(train_loader, val_loader)`` streaming a folder (``stream``; else
    the folder decoded into memory at --input-size), a loaded ``Dataset`` (--mean/--std given) or the spec string."""
    spec = data_spec(args)
    if getattr(args, "workers", None) is not None and args.workers < 0:
        raise BadInput(f"--workers must be >= 0, got {args.workers}")
    if spec is None:
        return None
    if is_folder(spec):
        from edgeprune.data.folder import decode_folder, folder_loaders

        cfg = folder_config(args)
        return folder_loaders(spec, cfg) if stream else decode_folder(spec, cfg, native_size=False)
    size = getattr(args, "input_size", None)
    if size is not None:
        native = _FIXED_SIZE_SETS.get(spec)
        if native is None:
            raise BadInput(f"--input-size resizes image folders (--data DIR); {spec} keeps its images' own size")
        if size != native:
            raise BadInput(f"--input-size {size}: {spec} holds {native}x{native} images (--input-size resizes image folders only)")
    mean = parse_channels(getattr(args, "mean", None), "--mean")
    std = parse_channels(getattr(args, "std", None), "--std")
    if mean is None and std is None:
        return spec
    from edgeprune.data import load_data
    from edgeprune.data.folder import FolderConfig

    cfg = FolderConfig(mean=mean or FolderConfig.mean, std=std or FolderConfig.std)  # validates them
    ds = load_data(spec)
    for split in (ds.train, ds.test):
        split.mean, split.std = cfg.mean, cfg.std
    return ds


def cli_dataset(args: argparse.Namespace):
    """The data as an in-memory ``Dataset`` (commands that need one), or None for --data none."""
    from edgeprune.data import load_data

    data = cli_data(args, stream=False)
    return load_data(data) if isinstance(data, str) else data


def check_model_input(args: argparse.Namespace, model=None) -> None:
    """When the flags set an input size: refuse, in one line, a model with a fixed-size head at that size."""
    size = data_input_size(args)
    if size is None:
        return
    from edgeprune.data.folder import check_input_size

    check_input_size(model if model is not None else cli_model(args), size, name=f"model {args.model}")


def report_skipped(data, where: str, ui: UI) -> None:
    """Log how many unreadable images a streamed folder skipped."""
    if isinstance(data, tuple):
        from edgeprune.data.folder import skipped_images

        n = skipped_images(*data)
        if n:
            ui.log(f"[yellow]skipped {n} unreadable image(s) in {where} (each replaced by the next readable one)[/]")


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


def add_model_source_options(p: argparse.ArgumentParser) -> None:
    """--model-arg (repeatable) and --weights: how a factory or hub model is built and what weights it gets."""
    p.add_argument("--model-arg", action="append", default=[], metavar="NAME=VALUE",
                   help="keyword argument of a factory or torchvision:/timm:/efficientnet-lite: model, e.g. num_classes=10 "
                        "(repeatable; "
                        "values are read as int, float, true/false or text)")
    p.add_argument("--weights", default=None, metavar="STATE.pt",
                   help="a state_dict (torch.save(model.state_dict())) to load into the model; read without unpickling")


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
