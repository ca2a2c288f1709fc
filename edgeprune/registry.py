"""A small name -> object registry filled by a decorator (the timm pattern).

Each extension point (importance criteria, profiler backends, solvers,
emitters) owns one ``Registry`` instance; nothing global beyond those.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from edgeprune.errors import BadInput

T = TypeVar("T")


@dataclass
class Entry(Generic[T]):
    """One registered object and its metadata (description, flags)."""

    name: str
    obj: T
    description: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """Maps names to objects; ``get`` raises a one-line error listing the known names."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, description: str = "", **meta: Any) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``."""

        def deco(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            doc = description or (getattr(obj, "__doc__", None) or "").strip().split("\n")[0]
            self._entries[name] = Entry(name, obj, doc, dict(meta))
            return obj

        return deco

    def get(self, name: str) -> T:
        """The object registered as ``name``."""
        return self.entry(name).obj

    def entry(self, name: str) -> Entry[T]:
        """The full entry registered as ``name``."""
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise BadInput(f"unknown {self.kind} {name!r} (known: {known})") from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries[n] for n in self.names())
