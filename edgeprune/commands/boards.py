"""``edgeprune boards``: what a TVM RPC tracker has (boards per key: total, free, queued requests)."""
from __future__ import annotations

import argparse
import os

from edgeprune.ui import UI


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the command."""
    p = sub.add_parser(
        "boards",
        help="list the boards behind a TVM RPC tracker (per key: total, free, pending)",
        description=(
            "Ask a TVM RPC tracker what it has: one row per device key with the boards registered, "
            "how many are free and how many requests are queued, then the boards themselves. "
            "Without --tracker, uses $TVM_TRACKER_HOST:$TVM_TRACKER_PORT."
        ),
        epilog="examples:\n  edgeprune boards --tracker 192.168.1.10:9190\n  edgeprune boards --tracker 127.0.0.1:9190 --json",
    )
    p.add_argument("--tracker", metavar="HOST:PORT", help="tracker address (default $TVM_TRACKER_HOST:$TVM_TRACKER_PORT)")
    p.add_argument("--timeout", type=float, default=5.0, metavar="S", help="seconds to wait for the tracker (default 5)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace, ui: UI) -> int:
    """List the tracker's keys and boards."""
    from edgeprune.backends.tvm.rpc import parse_tracker, tracker_summary
    from edgeprune.errors import BadInput

    addr = args.tracker
    if not addr:
        host, port = os.environ.get("TVM_TRACKER_HOST"), os.environ.get("TVM_TRACKER_PORT")
        if not (host and port):
            raise BadInput("no tracker given: pass --tracker HOST:PORT (or set TVM_TRACKER_HOST and TVM_TRACKER_PORT)")
        addr = f"{host}:{port}"
    if not args.timeout > 0:
        raise BadInput("--timeout must be positive")
    host, port = parse_tracker(addr)
    info = tracker_summary(host, port, timeout=args.timeout)
    ui.result(info)
    ui.table(
        f"TVM RPC tracker {info['tracker']}: queue status", ["key", "total", "free", "pending"],
        [(k, v["total"], v["free"], v["pending"]) for k, v in info["keys"].items()],
    )
    if info["servers"]:
        ui.table("boards", ["key", "address"], [(s["key"], f"{s['host']}:{s['port']}") for s in info["servers"]])
    elif not ui.json:
        ui.log("no boards registered (on a board: python -m tvm.exec.rpc_server --tracker HOST:PORT --key KEY)")
    return 0
