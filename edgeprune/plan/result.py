"""The planner's result: ``Plan`` (plan.json) and ``GroupPlan``."""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeprune.errors import BadInput
from edgeprune.metrics import sort_precisions

SCHEMA = "edgeprune-plan"
VERSION = 1
DENSE_PRECISION = "fp32"


# --------------------------------------------------------------------------- the result


@dataclass
class GroupPlan:
    """What the plan keeps of one channel group (indices into the model the plan was made for)."""

    id: str
    size: int
    kept: int
    indices: list[int]
    frozen: bool = False
    retained: float = 1.0  # R_g(kept): share of the group's importance kept


@dataclass
class Plan:
    """A solved plan: per group the kept channels, per layer the precision, predicted costs per target."""

    groups: dict[str, GroupPlan]
    precisions: dict[str, str]
    layers: dict[str, dict[str, Any]]  # name -> in_channels, out_channels, precision, cost {target: value}
    targets: dict[str, dict[str, Any]]  # name -> unit, predicted, limit, dense, dense_source
    metrics: dict[str, dict[str, Any]]  # model_bytes / macs / peak_memory -> predicted, limit, dense
    objective: float
    importance: float
    quant_penalty: float
    solver: dict[str, Any]
    feasible: bool = True
    budget: str = ""
    granularity: int = 1
    allowed_precisions: list[str] = field(default_factory=lambda: ["fp32"])
    model: str = ""
    notes: list[str] = field(default_factory=list)
    # several targets: {target: {layer: precision}}; ``precisions`` is the first target's map (docs/plan.md)
    precisions_by_target: dict[str, dict[str, str]] = field(default_factory=dict)

    def precisions_for(self, target: str) -> dict[str, str]:
        """``{layer: precision}`` of ``target``'s engine (``precisions`` when the plan has one map)."""
        return dict(self.precisions_by_target.get(target, self.precisions))

    # ---- use
    @property
    def keep(self) -> dict[str, list[int]]:
        """``{group_id: kept indices}`` for :func:`edgeprune.prune` (groups kept whole are left out)."""
        return {gid: list(g.indices) for gid, g in self.groups.items() if g.kept < g.size}

    @property
    def widths(self) -> dict[str, int]:
        """``{group_id: kept count}`` for every group."""
        return {gid: g.kept for gid, g in self.groups.items()}

    @property
    def wall_s(self) -> float:
        """Solver wall time (seconds), building the cost tables included."""
        return float(self.solver.get("wall_s", 0.0))

    # ---- serialisation
    def to_dict(self) -> dict[str, Any]:
        """The plan.json object (docs/plan.md)."""
        d = asdict(self)
        d["groups"] = {gid: {k: v for k, v in g.items() if k != "id"} for gid, g in d["groups"].items()}
        return {"schema": SCHEMA, "version": VERSION, **d}

    def to_json(self) -> str:
        """plan.json text."""
        return json.dumps(self.to_dict(), indent=2, default=_default) + "\n"

    @classmethod
    def from_json(cls, data: str | Mapping[str, Any]) -> Plan:
        """Inverse of :meth:`to_json` (accepts the text or the parsed object)."""
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except json.JSONDecodeError as err:
                raise BadInput(f"malformed plan JSON: {err.msg} at line {err.lineno}") from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Plan:
        """Inverse of :meth:`to_dict`, with a clear message for another schema or version."""
        if not isinstance(d, Mapping) or d.get("schema") != SCHEMA:
            raise BadInput(f"not an edgeprune plan (schema {d.get('schema') if isinstance(d, Mapping) else None!r}, expected {SCHEMA!r})")
        if d.get("version") != VERSION:
            raise BadInput(f"plan schema version {d.get('version')!r} is not supported (this edgeprune reads version {VERSION})")
        try:
            groups = {gid: GroupPlan(id=gid, **g) for gid, g in d["groups"].items()}
            fields = {k: d[k] for k in ("precisions", "layers", "targets", "metrics", "objective", "importance",
                                        "quant_penalty", "solver")}
            opt = {k: d[k] for k in ("feasible", "budget", "granularity", "allowed_precisions", "model", "notes",
                                            "precisions_by_target") if k in d}
        except (KeyError, TypeError) as err:
            raise BadInput(f"plan file is missing or has a bad field: {err}") from None
        return cls(groups=groups, **fields, **opt)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write plan.json atomically."""
        from edgeprune.fileio import write_text

        return write_text(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Plan:
        """Read a plan.json."""
        from edgeprune.fileio import read_json

        return cls.from_dict(read_json(path, "plan file"))

    # ---- people
    def summary_rows(self) -> list[tuple[Any, ...]]:
        """One row per group: (group, size, kept, kept %, retained importance, precisions of the layers it feeds out of)."""
        by_out: dict[str, list[str]] = {}
        for name, info in self.layers.items():
            if info.get("out_group"):
                by_out.setdefault(info["out_group"], []).append(self.precisions.get(name, DENSE_PRECISION))
        rows = []
        for gid, g in self.groups.items():
            precs = by_out.get(gid, [])
            text = ", ".join(f"{p}x{precs.count(p)}" for p in sort_precisions(precs)) if precs else "-"
            rows.append((gid + (" (frozen)" if g.frozen else ""), g.size, g.kept, f"{100.0 * g.kept / g.size:.0f}%",
                         round(g.retained, 4), text))
        return rows

    SUMMARY_COLUMNS = ("group", "size", "kept", "kept %", "retained", "precisions (producers)")

    def budget_rows(self) -> list[tuple[Any, ...]]:
        """One row per cost: (what, predicted, limit, dense, unit)."""
        rows = []
        for t, info in self.targets.items():
            unit = info["unit"] + (" (simulated)" if info["unit"] == "cycles" else "")
            rows.append((f"latency {t}", info["predicted"], _fmt_opt(info.get("limit")), info.get("dense"), unit))
        units = {"model_bytes": "bytes", "macs": "MACs", "peak_memory": "bytes"}
        for m, info in self.metrics.items():
            rows.append((m, info["predicted"], _fmt_opt(info.get("limit")), info.get("dense"), units.get(m, "")))
        return rows

    BUDGET_COLUMNS = ("cost", "predicted", "limit", "dense", "unit")


def _fmt_opt(v: Any) -> Any:
    return "-" if v is None else v


def _default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
