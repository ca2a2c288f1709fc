"""The ``edgeprune`` command line: thin; parses, calls the API, prints.

Exit codes: 0 success, 1 budget missed or verification failed, 2 bad input,
3 internal error, 130 interrupted. Errors are one line on stderr, never a traceback (use
``--verbose`` to see one for an internal error).
"""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from collections.abc import Sequence

from edgeprune.commands.options import EPILOG, finish_command
from edgeprune.errors import EdgepruneError, first_line
from edgeprune.ui import UI

EXAMPLES = """examples:
  edgeprune demo
  edgeprune targets
  edgeprune compress --model resnet20-cifar10 --target cpu-ort --budget latency=0.6x
  edgeprune profile --target cpu-ort --model resnet56-cifar10 --audit 30
  edgeprune compile --target vta-pynq --model resnet20-cifar10 --out build/fpga
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other bad input
        sys.stderr.write(f"edgeprune: error: {message} (see --help)\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every command module in ``edgeprune.commands``."""
    import edgeprune.commands as cmds

    parser = _Parser(
        prog="edgeprune",
        description="Compress trained PyTorch models for embedded hardware under an explicit, measured budget.",
        epilog=EXAMPLES + "\n" + EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from edgeprune import __version__

    parser.add_argument("--version", action="version", version=f"edgeprune {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for info in sorted(pkgutil.iter_modules(cmds.__path__), key=lambda i: i.name):
        mod = importlib.import_module(f"edgeprune.commands.{info.name}")
        register = getattr(mod, "register", None)
        if register is not None:
            finish_command(register(sub))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``edgeprune`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    rank = os.environ.get("RANK", "0").strip() if os.environ.get("WORLD_SIZE", "1").strip() not in ("", "1") else "0"
    follower = rank not in ("", "0")  # under torchrun only rank 0 talks; the others say only their own errors
    who = f"edgeprune [rank {rank}]" if follower else "edgeprune"
    ui = UI(quiet=args.quiet or follower, verbose=args.verbose, json=args.json and not follower)
    try:
        code = args.func(args, ui)
        return int(code or 0)
    except EdgepruneError as err:
        if not getattr(err, "said_by_rank0", False):
            sys.stderr.write(f"{who}: {err}\n")
        return err.exit_code
    except KeyboardInterrupt:
        sys.stderr.write(f"{who}: interrupted\n")
        return 130
    except Exception as err:  # an internal error: still one line unless --verbose
        if args.verbose:
            raise
        first = first_line(err)
        sys.stderr.write(f"{who}: internal error: {type(err).__name__}: {first} (run with --verbose for the traceback)\n")
        return 3


if __name__ == "__main__":
    sys.exit(main())
