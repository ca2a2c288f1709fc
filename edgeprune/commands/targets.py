"""``edgeprune targets``: list target files and whether each can run here."""
from __future__ import annotations

import argparse

from edgeprune.ui import UI


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the command."""
    p = sub.add_parser(
        "targets",
        help="list targets ($EDGEPRUNE_TARGETS, ./targets, the shipped ones) and whether each can run here",
        description="List every target file with its backend and availability.",
        epilog="example:\n  edgeprune targets --json",
    )
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace, ui: UI) -> int:
    """List targets."""
    from edgeprune.config import list_targets

    rows = []
    for t in list_targets():
        ok, reason = t.availability()
        rows.append({
            "name": t.name, "backend": t.backend, "device": t.device, "host": t.host, "threads": t.threads,
            "precisions": list(t.precisions), "channel_multiple": t.channel_multiple, "clock_mhz": t.clock_mhz,
            "available": ok, "reason": reason, "path": str(t.path),
        })
    ui.result(rows)
    ui.table(
        "targets", ["name", "backend", "precisions", "multiple", "host", "status"],
        [(r["name"], r["backend"], ",".join(r["precisions"]), r["channel_multiple"], r["host"],
          "available" if r["available"] else r["reason"]) for r in rows],
    )
    return 0
