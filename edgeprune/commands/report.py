"""``edgeprune report``: (re)write a run's report.html and report.md from its folder."""
from __future__ import annotations

import argparse

from edgeprune.ui import UI


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the command."""
    p = sub.add_parser(
        "report",
        help="write report.html (self-contained, with charts) and report.md for a compress run folder",
        description=(
            "Regenerate the report of a compress run from its folder (report.json, plan.json, model.pt and the "
            "target's latency profile): one self-contained HTML file with charts (no network needed) and a Markdown "
            "summary for terminals and pull requests. What each section shows: docs/report.md."
        ),
        epilog=(
            "examples:\n"
            "  edgeprune report build/demo\n"
            "  edgeprune report build/resnet20-cifar10-cpu-ort --profile my-profiles/cpu-ort--resnet20-cifar10.json\n"
            "  edgeprune report build/demo --json | jq -r .html"
        ),
    )
    p.add_argument("run", help="the --out folder of a compress (or demo) run")
    p.add_argument("--profile", default=None,
                   help="latency profile to price the layers with (default: the plan's, else TARGET--MODEL--HxW.json in the user cache or shipped)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace, ui: UI) -> int:
    """Write both files and print where they are."""
    from pathlib import Path

    from edgeprune.errors import BadInput
    from edgeprune.report import write_report

    if args.profile is not None and not Path(args.profile).is_file():
        raise BadInput(f"profile not found: {args.profile}")
    html_path, md_path = write_report(args.run, profile=args.profile)  # validates the folder first (one-line BadInput)
    ui.result({"run": str(args.run), "html": str(html_path), "markdown": str(md_path)})
    if not ui.json:
        print(html_path)
        print(md_path)
    return 0
