"""``edgeprune methods`` (list the literature methods) and ``edgeprune deep-compress`` (stored-size budget)."""
from __future__ import annotations

import argparse
from pathlib import Path

from edgeprune.commands.data_options import add_model_data_options, cli_dataset
from edgeprune.commands.options import finish_command
from edgeprune.errors import BadInput
from edgeprune.ui import UI


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``methods`` (returned) and ``deep-compress`` (finished here: the CLI only decorates the returned parser)."""
    p = sub.add_parser(
        "methods",
        help="list the compression methods of the literature and when to use each",
        description="The methods beside structured channel pruning (docs/methods.md): what each does, when to use it, "
                    "the paper, and whether its result is structured (faster on dense engines) or not.",
        epilog="examples:\n  edgeprune methods --list\n  edgeprune methods --json",
    )
    p.add_argument("--list", action="store_true", help="list the methods (the default)")
    p.set_defaults(func=run_list)

    d = sub.add_parser(
        "deep-compress",
        help="deep compression (prune + k-means sharing + Huffman) under a stored-bytes budget; size, not latency",
        description="Han et al.'s deep compression: unstructured magnitude pruning, per-layer k-means weight sharing "
                    "and Huffman coding, written as one .epdc file that loads back bit-exactly. It reduces stored bytes; "
                    "a dense engine runs the decoded model exactly as fast as the dense one.",
        epilog=(
            "examples:\n"
            "  edgeprune deep-compress --model resnet20-cifar10 --data cifar10-demo --bytes 200KB --out build/dc\n"
            "  edgeprune deep-compress --model resnet20-cifar10 --ratio 20 --bits 4 --out build/dc --json"
        ),
    )
    add_model_data_options(d)
    d.add_argument("--bytes", default=None, help="stored-size budget, e.g. 200KB, 1.5MB, 50000 (bytes)")
    d.add_argument("--ratio", type=float, default=None, help="or a compression ratio vs fp32 weights, e.g. 20")
    d.add_argument("--sparsity", type=float, default=None, help="fix the pruned fraction instead of searching it")
    d.add_argument("--bits", type=int, default=5, help="weight-sharing bits per layer (2**bits centroids), 1..8")
    d.add_argument("--scope", default="std", choices=["std", "layer", "global"],
                   help="pruning threshold: per-layer q*std (Han et al.), same fraction per layer, or one global |w|")
    d.add_argument("--steps", type=int, default=100, help="retraining steps after pruning (0 to skip)")
    d.add_argument("--share-steps", type=int, default=50, help="centroid retraining steps after sharing (0 to skip)")
    d.add_argument("--lr", type=float, default=0.01)
    d.add_argument("--batch-size", type=int, default=64)
    d.add_argument("--eval-images", type=int, default=None, help="test images (a fixed random subset) for the accuracy figures (default all)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--out", required=True, help="output folder (model.epdc, report.json) or a .epdc file")
    d.set_defaults(func=run_deep_compress)
    finish_command(d)
    return p


def run_list(args: argparse.Namespace, ui: UI) -> int:
    """Print the method table."""
    from edgeprune.methods import METHODS

    rows = [{"name": n, **info} for n, info in METHODS.items()]
    ui.result({"methods": rows})
    ui.table("compression methods (beside structured channel pruning; --json for what each does and its paper)",
             ["name", "structured", "when to use it"], [(r["name"], r["structured"], r["when"]) for r in rows])
    return 0


def parse_bytes(text: str) -> float:
    """'200KB' -> 200000.0 (the budget parser's units: B, KB, MB, GB, KiB, MiB...)."""
    from edgeprune.config import Budget

    b = Budget.parse(f"bytes={text.strip()}")
    if b.model_bytes is None or b.model_bytes.is_ratio:
        raise BadInput(f"--bytes needs an absolute size such as 200KB, not {text!r}")
    return float(b.model_bytes.value)


def run_deep_compress(args: argparse.Namespace, ui: UI) -> int:
    """Compress, write the file and report its size."""
    from edgeprune.fileio import write_json
    from edgeprune.methods.deep_compression import deep_compress, load_compressed
    from edgeprune.models import load_model

    if args.bytes is None and args.ratio is None and args.sparsity is None:
        raise BadInput("give a budget: --bytes 200KB, --ratio 20 or --sparsity 0.9")
    if args.bytes is not None and args.ratio is not None:
        raise BadInput("give --bytes or --ratio, not both")
    target = parse_bytes(args.bytes) if args.bytes is not None else None
    if args.steps < 0 or args.share_steps < 0:
        raise BadInput("--steps and --share-steps must be >= 0")
    model = load_model(args.model).eval()
    data = cli_dataset(args)
    out = Path(args.out)
    file_path = out if out.suffix == ".epdc" else out / "model.epdc"
    res = deep_compress(model, data, target, args.ratio, sparsity=args.sparsity, bits=args.bits, scope=args.scope,
                        prune_steps=args.steps, share_steps=args.share_steps, lr=args.lr, batch_size=args.batch_size,
                        eval_limit=args.eval_images, seed=args.seed, out=file_path, ui=ui)
    # the file must load back to the very weights that were measured
    reloaded = load_compressed(file_path, load_model(args.model))
    exact = all(a.shape == b.shape and bool((a == b).all()) for a, b in
                zip(res.model.state_dict().values(), reloaded.state_dict().values()))
    report = {**res.to_dict(), "model": args.model, "data": args.data, "roundtrip_exact": exact}
    report_path = file_path.parent / "report.json"
    write_json(report_path, report)
    ui.result(report)
    acc = res.accuracy
    rows = [("stored bytes", f"{res.stored_bytes:,}"), ("fp32 weight bytes", f"{res.dense_bytes:,}"),
            ("compression ratio", f"{res.ratio:.1f}x"), ("sparsity", f"{res.sparsity:.1%}"),
            ("centroids per layer", f"<= {2 ** res.bits}")]
    if res.target_bytes:
        rows.append(("budget", f"{res.target_bytes:,.0f} bytes ({'met' if res.stored_bytes <= res.target_bytes else 'MISSED'})"))
    for k in ("dense", "pruned", "shared", "final"):
        if k in acc:
            rows.append((f"top-1 {k}", f"{acc[k]:.2f}%"))
    rows.append(("file round-trip", "bit-exact" if exact else "MISMATCH"))
    ui.table(f"deep compression of {args.model}", ["", "value"], rows)
    ui.log("[yellow]note: unstructured sparsity and weight sharing change stored bytes, not latency: dense engines "
           "(ONNX Runtime, TensorRT, TVM, VTA) decode the file to dense tensors and run as fast as before.[/yellow]")
    ui.log(f"wrote {file_path} ({res.stored_bytes:,} bytes) and {report_path}")
    if not exact:
        from edgeprune.errors import VerificationFailed

        raise VerificationFailed(f"{file_path} does not load back to the compressed weights")
    return 0
