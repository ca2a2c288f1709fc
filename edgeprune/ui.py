"""Terminal output: logs and progress on stderr (rich), results on stdout (tables or JSON)."""
from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


@dataclass
class UI:
    """How much to say: ``quiet`` hides logs and progress, ``json`` sends only JSON to stdout."""

    quiet: bool = False
    verbose: bool = False
    json: bool = False

    @property
    def console(self):
        """A rich console on stderr."""
        from rich.console import Console

        if not hasattr(self, "_console"):
            self._console = Console(stderr=True, highlight=False)
        return self._console

    def log(self, msg: str) -> None:
        """A progress message (stderr), hidden with --quiet."""
        if not self.quiet:
            self.console.print(msg)

    @contextmanager
    def progress(self, description: str, total: float | None = None) -> Iterator[Bar]:
        """A progress bar with rate and time left (no-op under --quiet)."""
        if self.quiet or not sys.stderr.isatty() and self.json:
            yield Bar(None, None)
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=self.console, transient=False,
        ) as prog:
            task = prog.add_task(description, total=total, info="")
            yield Bar(prog, task)

    def table(self, title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        """Print a summary table on stdout (not under --json)."""
        if self.json:
            return
        from rich.console import Console
        from rich.table import Table

        t = Table(title=title)
        for c in columns:
            t.add_column(c, justify="right" if c not in (columns[0],) else "left")
        for r in rows:
            t.add_row(*[_fmt(v) for v in r])
        Console(highlight=False).print(t)

    def result(self, obj: Any) -> None:
        """The machine-readable result: JSON on stdout under --json."""
        if self.json:
            sys.stdout.write(json.dumps(obj, indent=2, default=_default) + "\n")
            sys.stdout.flush()


@dataclass
class Bar:
    """Handle of one progress bar."""

    prog: Any
    task: Any

    def advance(self, n: float = 1, info: str | None = None) -> None:
        """Move on by ``n``."""
        if self.prog is not None:
            self.prog.update(self.task, advance=n, **({"info": info} if info is not None else {}))

    def update(self, **kw: Any) -> None:
        """Set fields (total, completed, info, description)."""
        if self.prog is not None:
            self.prog.update(self.task, **kw)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 100 else f"{v:,.1f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def _default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "to_dict"):
        return o.to_dict()
    return str(o)


QUIET = UI(quiet=True)
