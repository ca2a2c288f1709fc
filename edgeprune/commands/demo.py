"""``edgeprune demo``: compress the embedded ResNet-20 on the embedded CIFAR-10 subset for ONNX Runtime CPU."""
from __future__ import annotations

import argparse

from edgeprune.commands.compress import add_compress_options
from edgeprune.commands.compress import run as run_compress
from edgeprune.ui import UI

# ResNet-20 is small: per-operator overhead keeps even the thinnest plan near 0.5x of the dense
# latency on ORT CPU, so 0.65x (a 1.54x speed-up) leaves the planner room to keep accuracy
DEMO_BUDGET = "latency=0.65x"


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
    args.model, args.data, args.input_shape = "resnet20-cifar10", "cifar10-demo", None
    args.out = args.out or "build/demo"
    return run_compress(args, ui)
