"""What every command's parser shares (--json/--quiet/--verbose and the exit-code epilog); no ``register``: not a command."""
from __future__ import annotations

import argparse

EPILOG = ("exit codes: 0 success, 1 budget missed or verification failed, 2 bad input, "
          "3 internal error (a bug: please report it), 130 interrupted")


def common_options(p: argparse.ArgumentParser) -> None:
    """--json / --quiet / --verbose on every command."""
    p.add_argument("--json", action="store_true", help="machine-readable result on stdout (logs stay on stderr)")
    p.add_argument("-q", "--quiet", action="store_true", help="no logs or progress bars")
    p.add_argument("-v", "--verbose", action="store_true", help="more detail; tracebacks for internal errors")


def finish_command(p: argparse.ArgumentParser) -> None:
    """Add :func:`common_options` and the exit-code epilog to a command's parser (examples kept verbatim)."""
    common_options(p)
    p.epilog = (p.epilog + "\n\n" if p.epilog else "") + EPILOG
    p.formatter_class = argparse.RawDescriptionHelpFormatter
