"""``edgeprune demo``: compress the embedded ResNet-20 on the embedded CIFAR-10 subset for ONNX Runtime CPU."""
from __future__ import annotations

import argparse

from edgeprune.commands.compress import add_compress_options, config_from_args, show
from edgeprune.ui import UI

DEMO_BUDGET = "latency=0.6x"


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the command."""
    p = sub.add_parser(
        "demo",
        help="compress the embedded ResNet-20 for ONNX Runtime CPU (a few minutes)",
        description="The end-to-end demo on the embedded model and data: ResNet-20, CIFAR-10 subset, cpu-ort.",
        epilog="example:\n  edgeprune demo\n  edgeprune demo --budget latency=0.5x --epochs 3",
    )
    add_compress_options(p, default_budget=DEMO_BUDGET)
    p.set_defaults(func=run, out=None)
    return p


def run(args: argparse.Namespace, ui: UI) -> int:
    """Run the demo."""
    from edgeprune.pipeline import compress

    result = compress("resnet20-cifar10", "cifar10-demo", args.target, args.budget, out=args.out or "build/demo",
                      config=config_from_args(args), ui=ui)
    show(result, ui)
    return 0
