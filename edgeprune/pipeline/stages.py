"""Checkpointed stages of a run (``<out>/state/``) and where its wall time went."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from edgeprune.fileio import atomic_path, read_json, write_json

# what a second of a run is spent on (score: importance, forward+backward passes); "other" is the overhead
KINDS = ("measure", "train", "score", "solve")


@dataclass
class Clock:
    """Seconds per stage and per kind of work (measure, train, solve); the rest of a stage is overhead."""

    stages: dict[str, float] = field(default_factory=dict)
    kinds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(KINDS, 0.0))

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a stage (its seconds add up if it runs twice)."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.stages[name] = self.stages.get(name, 0.0) + time.perf_counter() - t0

    @contextmanager
    def work(self, kind: str) -> Iterator[None]:
        """Time work of ``kind`` (measure, train, solve) inside a stage."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.kinds[kind] += time.perf_counter() - t0

    def split(self, wall: float) -> dict[str, float]:
        """``{measure, train, solve, other, other_share}`` of a run of ``wall`` seconds."""
        out = {k: round(v, 3) for k, v in self.kinds.items()}
        other = max(wall - sum(self.kinds.values()), 0.0)
        out.update(other=round(other, 3), other_share=round(other / wall, 4) if wall > 0 else 0.0)
        return out


class Stages:
    """Checkpoint files of a run: each stage's result, loaded again under ``resume``."""

    def __init__(self, out: Path, resume: bool, write: bool = True) -> None:
        self.dir = Path(out) / "state"
        self.resume = resume  # the folder is made on the first checkpoint: a run that fails its checks leaves none
        self.write = write  # False on torchrun ranks other than 0: they compute, never save or load

    def saved(self, name: str) -> bool:
        """Whether a resumed run would load stage ``name`` instead of computing it."""
        return self.write and self.resume and any((self.dir / f"{name}{ext}").exists() for ext in (".json", ".pt"))

    def json(self, name: str, compute: Callable[[], Any]) -> Any:
        """``compute()`` saved as ``state/<name>.json``, or the saved value under ``resume``."""
        path = self.dir / f"{name}.json"
        if not self.write:
            return compute()
        if self.resume and path.exists():
            return read_json(path, f"checkpoint {name}")
        value = compute()
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json(path, value)
        return value

    def tensors(self, name: str, compute: Callable[[], Any]) -> Any:
        """``compute()`` saved with ``torch.save`` as ``state/<name>.pt``, or the saved value under ``resume``."""
        path = self.dir / f"{name}.pt"
        if not self.write:
            return compute()
        if self.resume and path.exists():
            return torch.load(path, map_location="cpu", weights_only=True)
        value = compute()
        self.dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            torch.save(value, tmp)
        return value
