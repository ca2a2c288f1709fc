"""The model and data flags (--model, --data, --input-shape, --input-size, --mean, --std, --workers) and what they
mean: the data, the example input shape, the size check; shared by every command that takes a model and data."""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from edgeprune.commands.model_options import cli_model
from edgeprune.errors import BadInput
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
