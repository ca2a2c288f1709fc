"""``edgeprune importance``: list the criteria, score channels, or grade criteria against the oracle."""
from __future__ import annotations

import argparse

from edgeprune.commands.data_options import add_model_data_options, cli_dataset, data_input_shape
from edgeprune.errors import BadInput
from edgeprune.ui import UI


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the command."""
    p = sub.add_parser(
        "importance",
        help="channel importance: list criteria, score a model, or grade criteria against the drop-one-channel oracle",
        description="Score every channel of every prunable group (higher = more important), or measure how well each "
                    "criterion predicts the true loss change of removing a channel.",
        epilog=(
            "examples:\n"
            "  edgeprune importance --list\n"
            "  edgeprune importance --model resnet20-cifar10 --data cifar10-demo --criterion taylor --out scores.pt\n"
            "  edgeprune importance --model resnet20-cifar10 --data cifar10-demo --oracle 64 --criteria taylor,fisher,l1"
        ),
    )
    add_model_data_options(p)
    p.add_argument("--list", action="store_true", help="list the criteria and what each needs")
    p.add_argument("--criterion", default="fisher", help="criterion name (default fisher; see --list)")
    p.add_argument("--out", default=None, help="save the scores ({group: tensor}) with torch.save")
    p.add_argument("--oracle", type=int, default=0, metavar="N", help="grade criteria on N channels removed one at a time")
    p.add_argument("--criteria", default="", help="comma-separated criteria to grade (default: all)")
    p.add_argument("--batches", type=int, default=8, help="training batches for the criteria")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--oracle-batches", type=int, default=4, help="held-out batches (of 128) for the oracle")
    p.add_argument("--oracle-split", choices=["test", "train"], default="test",
                   help="where the oracle measures the loss: the test split, or training images the criteria never see")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)
    return p


def _needs(nd: bool, ng: bool) -> str:
    return "gradients" if ng else ("data" if nd else "nothing")


def run(args: argparse.Namespace, ui: UI) -> int:
    """List, score or grade."""
    from edgeprune.importance import importance, list_criteria

    crits = list_criteria()
    if args.list:
        rows = [{"name": n, "description": desc, "needs": _needs(c.needs_data, c.needs_grad), "needs_data": c.needs_data,
                 "needs_grad": c.needs_grad, "combine": c.combine, "paper": c.paper} for n, c, desc in crits]
        ui.result({"criteria": rows})
        ui.table("importance criteria", ["name", "needs", "combine", "description"],
                 [(r["name"], r["needs"], r["combine"], r["description"]) for r in rows])
        return 0

    from edgeprune.graph import channel_groups, example_input
    from edgeprune.models import load_model

    model = load_model(args.model).eval()
    data = cli_dataset(args)
    example = example_input(None, data, data_input_shape(args))
    graph = channel_groups(model, example)
    names = {n for n, _, _ in crits}
    if args.oracle:
        from edgeprune.importance.oracle import grade, oracle

        if data is None:
            raise BadInput("--oracle needs --data (held-out images to measure the loss on)")
        chosen = [c.strip() for c in args.criteria.split(",") if c.strip()] or sorted(names)
        for c in chosen:
            if c not in names:
                raise BadInput(f"unknown importance criterion {c!r} (known: {', '.join(sorted(names))})")
        with ui.progress("oracle: channels removed", total=None) as bar:
            res = oracle(model, data, graph, n_channels=args.oracle, batches=args.oracle_batches, seed=args.seed,
                         progress=lambda i, n: bar.update(completed=i, total=n), split=args.oracle_split)
        rel = res.reliability()
        ui.log(f"oracle: {len(res.channels)} channels, {res.n_images} held-out {args.oracle_split} images, base loss {res.base_loss:.4f}, "
               + (f"split-half reliability {rel:.3f}, " if rel is not None else "") + f"{res.seconds:.1f} s")
        with ui.progress("criteria", total=len(chosen)) as bar:
            grades = grade(chosen, model, data, res, graph, batches=args.batches, batch_size=args.batch_size, seed=args.seed,
                           on_done=lambda g: bar.advance(1, g.criterion))
        rows = sorted(grades, key=lambda g: -(g.spearman if g.spearman == g.spearman else -9))
        ui.result({"oracle": {"channels": len(res.channels), "images": res.n_images, "split": res.split, "base_loss": res.base_loss, "reliability": rel,
                              "seconds": res.seconds},
                   "grades": [{"criterion": g.criterion, "spearman": g.spearman, "spearman_abs": g.spearman_abs,
                               "topk_overlap": g.topk_overlap, "bottomk_overlap": g.bottomk_overlap, "k": g.k,
                               "seconds": g.seconds, "needs": _needs(g.needs_data, g.needs_grad), "error": g.error} for g in rows]})
        ui.table(f"criteria vs oracle ({len(res.channels)} channels, k={rows[0].k if rows else 0})",
                 ["criterion", "needs", "Spearman", "vs |dL|", "top-k", "bottom-k", "seconds"],
                 [(g.criterion, _needs(g.needs_data, g.needs_grad), f"{g.spearman:+.3f}", f"{g.spearman_abs:+.3f}",
                   f"{g.topk_overlap:.2f}", f"{g.bottomk_overlap:.2f}", f"{g.seconds:.1f}") for g in rows])
        return 0

    if args.criterion not in names:
        raise BadInput(f"unknown importance criterion {args.criterion!r} (known: {', '.join(sorted(names))})")
    scores = importance(model, data, args.criterion, graph=graph, batches=args.batches, batch_size=args.batch_size, seed=args.seed)
    if args.out:
        import torch

        torch.save(scores, args.out)
        ui.log(f"scores saved to {args.out}")
    ui.result({"criterion": args.criterion, "groups": {k: [float(x) for x in v] for k, v in scores.items()}, "out": args.out})
    ui.table(f"{args.criterion} scores", ["group", "channels", "min", "mean", "max"],
             [(k, v.numel(), f"{float(v.min()):.4g}", f"{float(v.mean()):.4g}", f"{float(v.max()):.4g}") for k, v in scores.items()])
    return 0
