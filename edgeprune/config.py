"""Targets (edgeprune/targets/*.toml, ./targets, $EDGEPRUNE_TARGETS) and budgets ("latency=0.6x,bytes=2MB")."""
from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeprune.errors import BadInput

PRECISIONS = ("fp32", "fp16", "int8", "int4")


@dataclass(frozen=True)
class Target:
    """A device edgeprune compiles for and measures on, read from ``targets/NAME.toml``."""

    name: str
    backend: str
    device: str = ""
    host: str = "local"
    threads: int = 1
    precisions: tuple[str, ...] = ("fp32",)
    channel_multiple: int = 1
    clock_mhz: float | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def is_remote(self) -> bool:
        """True when the target is reached through an RPC tracker (``rpc://host:port/key``)."""
        return self.host.startswith("rpc://")

    def availability(self) -> tuple[bool, str]:
        """(can run here, reason) from the backend's own check (:func:`edgeprune.backends.availability`)."""
        from edgeprune.backends import availability

        return availability(self)


def targets_dirs() -> list[Path]:
    """Folders searched for target files: $EDGEPRUNE_TARGETS, ./targets, then the ones shipped in the package."""
    dirs = []
    env = os.environ.get("EDGEPRUNE_TARGETS")
    if env:
        dirs += [Path(p) for p in env.split(os.pathsep) if p]
    dirs.append(Path.cwd() / "targets")
    dirs.append(Path(__file__).resolve().parent / "targets")
    seen, out = set(), []
    for d in dirs:
        r = d.resolve()
        if r not in seen and r.is_dir():
            seen.add(r)
            out.append(d)
    return out


_TARGET_KEYS: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "backend": str,
    "device": str,
    "host": str,
    "threads": int,
    "precisions": list,
    "channel_multiple": int,
    "clock_mhz": (int, float),
    "options": dict,
}


def load_target(path: str | os.PathLike[str]) -> Target:
    """Read and validate one target TOML file."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"target file not found: {path}") from None
    except tomllib.TOMLDecodeError as err:
        raise BadInput(f"malformed target file {path}: {err}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise BadInput(f"cannot read target file {path}: {err}") from None
    for key in ("name", "backend"):
        if key not in raw:
            raise BadInput(f"target file {path}: missing key {key!r}")
    for key, value in raw.items():
        if key not in _TARGET_KEYS:
            raise BadInput(f"target file {path}: unknown key {key!r} (known: {', '.join(_TARGET_KEYS)})")
        want = _TARGET_KEYS[key]
        if isinstance(value, bool) or not isinstance(value, want):
            names = want.__name__ if isinstance(want, type) else " or ".join(t.__name__ for t in want)
            raise BadInput(f"target file {path}: key {key!r} must be {names}, got {type(value).__name__}")
    from edgeprune.backends import backend_names, get_backend  # lazily: backends import config's types only

    if raw["backend"] not in backend_names():
        raise BadInput(f"target file {path}: unknown backend {raw['backend']!r} (known: {', '.join(backend_names())})")
    get_backend(raw["backend"]).check_options(raw.get("options", {}), f"target file {path}")
    precisions = tuple(raw.get("precisions", ["fp32"]))
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad:
        raise BadInput(f"target file {path}: unknown precision {bad[0]!r} (known: {', '.join(PRECISIONS)})")
    emitted = get_backend(raw["backend"]).emits_precisions
    if emitted is not None:
        wrong = [p for p in precisions if p not in emitted]
        if wrong:
            raise BadInput(f"target file {path}: backend {raw['backend']!r} does not measure or emit {wrong[0]} "
                           f"(it does: {', '.join(emitted)})")
    threads = raw.get("threads", 1)
    multiple = raw.get("channel_multiple", 1)
    if threads < 1 or multiple < 1:
        raise BadInput(f"target file {path}: threads and channel_multiple must be >= 1")
    host = raw.get("host", "local")
    if host != "local" and not re.fullmatch(r"rpc://[^:/]+:\d+/[^/]+", host):
        raise BadInput(f"target file {path}: host must be 'local' or 'rpc://HOST:PORT/KEY', got {host!r}")
    return Target(
        name=raw["name"],
        backend=raw["backend"],
        device=raw.get("device", ""),
        host=host,
        threads=threads,
        precisions=precisions,
        channel_multiple=multiple,
        clock_mhz=raw.get("clock_mhz"),
        options=dict(raw.get("options", {})),
        path=path,
    )


def list_targets() -> list[Target]:
    """Every target file found in :func:`targets_dirs` (first folder wins on a name clash)."""
    found: dict[str, Target] = {}
    for d in targets_dirs():
        for f in sorted(d.glob("*.toml")):
            t = load_target(f)
            found.setdefault(t.name, t)
    return [found[n] for n in sorted(found)]


def get_target(name_or_path: str | os.PathLike[str] | Target) -> Target:
    """A target by name (``cpu-ort``) or by the path of its TOML file."""
    if isinstance(name_or_path, Target):
        return name_or_path
    text = str(name_or_path)
    if text.endswith(".toml") or os.sep in text:
        return load_target(text)
    for d in targets_dirs():
        f = d / f"{text}.toml"
        if f.is_file():
            return load_target(f)
    known = ", ".join(t.name for t in list_targets()) or "none"
    raise BadInput(f"unknown target {text!r} (known: {known})")


# budgets live in edgeprune.budget; re-exported here for the many modules that import them from config
from edgeprune.budget import Budget, Limit  # noqa: F401
