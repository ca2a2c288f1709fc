"""Errors that reach the user as one line and an exit code.

Exit codes (documented in the README): 0 success, 1 budget missed or
verification failed, 2 bad input, 3 internal error (a bug: any other exception,
:class:`InternalError` included).
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class EdgepruneError(Exception):
    """An error the user can act on; the CLI prints ``str(err)`` and exits ``exit_code``."""

    exit_code = 2


class InternalError(RuntimeError):
    """An inconsistency inside edgeprune (a bug, never the user's input): the CLI exits 3 and says "internal error"."""


class BadInput(EdgepruneError):
    """A file, option or model the user gave cannot be used."""

    exit_code = 2


class UnsupportedLayer(BadInput):
    """The model contains a pattern edgeprune cannot prune correctly."""


class BudgetMissed(EdgepruneError):
    """The budget cannot be met (or was not met on measurement)."""

    exit_code = 1


class AccuracyDropped(EdgepruneError):
    """The compressed model lost more accuracy than ``--max-drop`` allows (the files are written)."""

    exit_code = 1


class VerificationFailed(EdgepruneError):
    """The compiled engine disagrees with the PyTorch model."""

    exit_code = 1


class BackendUnavailable(EdgepruneError):
    """An optional backend (tensorrt, tvm, ...) is not installed or has no device here."""

    exit_code = 2


def first_line(err: BaseException) -> str:
    """The first non-empty line of an exception's message, or its type name."""
    for line in str(err).splitlines():
        if line.strip():
            return line.strip()
    return type(err).__name__


def close_names(name: str, names: Iterable[str], n: int = 5) -> str:
    """``"did you mean a, b?"`` for the few names closest to ``name`` (empty when none is close)."""
    names = list(names)
    close = difflib.get_close_matches(name, names, n=n, cutoff=0.5)
    if not close:
        close = [c for c in names if name.lower() in c.lower()][:n]
    return f"; did you mean {', '.join(close)}?" if close else ""
