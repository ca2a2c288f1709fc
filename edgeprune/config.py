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


# --------------------------------------------------------------------------- budgets

_UNITS = {
    # latency
    "ms": ("latency", 1.0),
    "us": ("latency", 1e-3),
    "s": ("latency", 1e3),
    "cycles": ("cycles", 1.0),
    "kcycles": ("cycles", 1e3),
    "mcycles": ("cycles", 1e6),
    # sizes (decimal and binary)
    "b": ("bytes", 1.0),
    "kb": ("bytes", 1e3),
    "mb": ("bytes", 1e6),
    "gb": ("bytes", 1e9),
    "kib": ("bytes", 1024.0),
    "mib": ("bytes", 1024.0**2),
    "gib": ("bytes", 1024.0**3),
    # counts
    "": ("count", 1.0),
    "k": ("count", 1e3),
    "m": ("count", 1e6),
    "g": ("count", 1e9),
    # ratios
    "x": ("ratio", 1.0),
    "%": ("ratio", 0.01),
}
_KEYS = {
    "latency": "latency",
    "lat": "latency",
    "bytes": "model_bytes",
    "size": "model_bytes",
    "model_bytes": "model_bytes",
    "memory": "peak_memory",
    "peak_memory": "peak_memory",
    "mem": "peak_memory",
    "macs": "macs",
    "flops": "macs",
}
_ALLOWED = {
    "latency": {"latency", "cycles", "ratio"},
    "model_bytes": {"bytes", "ratio"},
    "peak_memory": {"bytes", "ratio"},
    "macs": {"count", "ratio"},
}


@dataclass(frozen=True)
class Limit:
    """One budget limit: an absolute value in its unit, or a ratio of the dense model's value."""

    value: float
    unit: str  # "ms", "cycles", "bytes", "count" or "ratio"

    @property
    def is_ratio(self) -> bool:
        """True for a fraction of the dense value (``0.6x``)."""
        return self.unit == "ratio"

    def resolve(self, dense: float) -> float:
        """The absolute limit, given the dense model's value in the same unit."""
        return self.value * dense if self.is_ratio else self.value

    def __str__(self) -> str:
        if self.is_ratio:
            return f"{self.value:g}x"
        suffix = {"ms": " ms", "cycles": " cycles", "bytes": " B", "count": ""}[self.unit]
        return f"{self.value:g}{suffix}"


@dataclass(frozen=True)
class Budget:
    """What the compressed model must meet; any subset of the limits.

    ``latency`` maps a target name (or ``"*"`` for every target in the run) to
    a limit in ms, cycles or a ratio of the dense measured latency.
    """

    latency: Mapping[str, Limit] = field(default_factory=dict)
    model_bytes: Limit | None = None
    peak_memory: Limit | None = None
    macs: Limit | None = None
    granularity: int | None = None

    @classmethod
    def of(
        cls,
        latency_ms: float | None = None,
        latency_ratio: float | None = None,
        model_bytes: float | None = None,
        macs: float | None = None,
        granularity: int | None = None,
    ) -> Budget:
        """Convenience constructor for the common single-target case."""
        lat: dict[str, Limit] = {}
        if latency_ms is not None:
            lat["*"] = Limit(_positive(latency_ms, "latency"), "ms")
        elif latency_ratio is not None:
            lat["*"] = Limit(_positive(latency_ratio, "latency"), "ratio")
        return cls(
            latency=lat,
            model_bytes=None if model_bytes is None else Limit(_positive(model_bytes, "bytes"), "bytes"),
            macs=None if macs is None else Limit(_positive(macs, "macs"), "count"),
            granularity=granularity,
        )

    @classmethod
    def parse(cls, text: str) -> Budget:
        """Parse ``latency=0.6x,bytes=2MB,latency@vta-pynq=40000cycles,macs=20M,granularity=8``."""
        if not text or not text.strip():
            raise BadInput("empty budget (example: --budget latency=0.6x)")
        latency: dict[str, Limit] = {}
        fields: dict[str, Any] = {}
        for part in text.split(","):
            part = part.strip()
            m = re.fullmatch(r"([A-Za-z_]+)(?:@([\w.\-]+))?\s*=\s*([-+]?[0-9]*\.?[0-9]+(?:e[-+]?\d+)?)\s*([A-Za-z%]*)", part)
            if not m:
                raise BadInput(f"cannot parse budget {part!r} (expected KEY=VALUE[UNIT], e.g. latency=0.6x)")
            key, tgt, num, unit = m.group(1).lower(), m.group(2), float(m.group(3)), m.group(4).lower()
            if key == "granularity":
                if unit or num < 1 or num != int(num):
                    raise BadInput(f"budget {part!r}: granularity must be a positive integer")
                fields["granularity"] = int(num)
                continue
            if key not in _KEYS:
                raise BadInput(f"budget {part!r}: unknown key {key!r} (known: latency, bytes, memory, macs, granularity)")
            field_name = _KEYS[key]
            if unit == "" and field_name == "latency":
                unit = "ms"
            if unit not in _UNITS:
                raise BadInput(f"budget {part!r}: unknown unit {unit!r}")
            kind, scale = _UNITS[unit]
            if kind not in _ALLOWED[field_name]:
                raise BadInput(f"budget {part!r}: unit {unit!r} does not fit {key}")
            _positive(num, part)
            if kind == "ratio" and num * scale > 1.0:
                raise BadInput(f"budget {part!r}: a ratio above 1x is not a compression budget")
            lim = Limit(num * scale, "ms" if kind == "latency" else kind)
            if field_name == "latency":
                latency[tgt or "*"] = lim
            else:
                if tgt:
                    raise BadInput(f"budget {part!r}: only latency takes @target")
                fields[field_name] = lim
        return cls(latency=latency, **fields)

    def latency_for(self, target: str) -> Limit | None:
        """The latency limit that applies to ``target``."""
        return self.latency.get(target, self.latency.get("*"))

    def is_empty(self) -> bool:
        """True when no limit is set."""
        return not (self.latency or self.model_bytes or self.peak_memory or self.macs)

    def __str__(self) -> str:
        parts = [f"latency{'' if t == '*' else '@' + t}={lim}" for t, lim in self.latency.items()]
        for name in ("model_bytes", "peak_memory", "macs"):
            lim = getattr(self, name)
            if lim is not None:
                parts.append(f"{name}={lim}")
        if self.granularity:
            parts.append(f"granularity={self.granularity}")
        return ",".join(parts)


def _positive(value: float, what: str) -> float:
    if not value > 0:
        raise BadInput(f"budget {what}: must be positive, got {value:g}")
    return float(value)
