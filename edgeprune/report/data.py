"""Everything a report shows, gathered from a run folder.

Only ``report.json`` is required. Every other piece (plan.json, model.pt, the
dense model, the latency profile, its audit, oracle results) is optional: when
one is missing or unreadable the section says so in a note instead of failing.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeprune.errors import BadInput, first_line


@dataclass
class LayerRow:
    """One conv/linear layer, dense and compressed."""

    name: str
    op: str
    in_group: str | None
    out_group: str | None
    dense_in: int
    dense_out: int
    kept_in: int
    kept_out: int
    dense_dtype: str
    dtype: str
    dense_macs: int
    macs: int


@dataclass
class TargetLatency:
    """Per-layer latency predicted by one target's profile for the dense and compressed layers."""

    target: str
    unit: str
    profile: str
    complete: bool
    dense: dict[str, float | None]
    compressed: dict[str, float | None]
    dense_total: float | None = None  # calibrated model_cost
    compressed_total: float | None = None
    dense_measured: float | None = None
    compressed_measured: float | None = None
    unpriced: list[str] = field(default_factory=list)


@dataclass
class PredPoint:
    """One predicted-vs-measured pair."""

    label: str
    predicted: float
    measured: float
    kind: str  # "audit aligned" | "audit unaligned" | "audit dense" | "this run"

    @property
    def error(self) -> float:
        return self.predicted / self.measured - 1.0 if self.measured else math.nan


@dataclass
class Candidate:
    """A model the run evaluated: latency and (when evaluated) top-1."""

    label: str
    latency_ms: float
    top1: float | None
    kind: str  # "dense" | "chosen" | "candidate" | "attempt"


@dataclass
class BudgetLine:
    """One limit of the budget and how the compressed model did against it."""

    name: str
    value: str
    limit: str
    met: bool
    status: str
    raw: str


@dataclass
class RunReport:
    """The material of one report; each ``*_note`` explains a missing or partial section."""

    run_dir: Path
    report: dict[str, Any]
    plan: dict[str, Any] | None
    notes: list[str] = field(default_factory=list)
    budget: list[BudgetLine] = field(default_factory=list)
    layers: list[LayerRow] | None = None
    layers_note: str = ""
    groups: list[tuple[str, int, int]] = field(default_factory=list)  # id, size, kept
    latency: list[TargetLatency] = field(default_factory=list)
    latency_notes: list[str] = field(default_factory=list)
    pred_points: list[PredPoint] = field(default_factory=list)
    pred_unit: str = "ms"
    pred_target: str = ""
    audit: dict[str, Any] | None = None
    audit_profile: str = ""
    pred_notes: list[str] = field(default_factory=list)
    candidates: list[Candidate] = field(default_factory=list)
    candidates_notes: list[str] = field(default_factory=list)
    oracle: list[dict[str, Any]] | None = None
    oracle_note: str = ""

    @property
    def model(self) -> str:
        return str(self.report.get("model", "?"))

    @property
    def target(self) -> str:
        return str(self.report.get("target", "?"))

    @property
    def criterion(self) -> str | None:
        return (self.report.get("config") or {}).get("criterion")


# --------------------------------------------------------------------------- entry


def load_run(run_dir: str | Path, profile: str | Path | None = None) -> RunReport:
    """Read a run folder; raises :class:`BadInput` (one line) when it is missing or is not a run."""
    from edgeprune.fileio import read_json

    run = Path(run_dir)
    if not run.exists():
        raise BadInput(f"run folder not found: {run}")
    if not run.is_dir():
        raise BadInput(f"{run} is not a folder (give the --out folder of a compress run)")
    if not (run / "report.json").exists():
        raise BadInput(f"{run} has no report.json: not an edgeprune compress run folder")
    rep = read_json(run / "report.json", "run report")
    if not isinstance(rep, dict) or not isinstance(rep.get("dense"), dict) or not isinstance(rep.get("compressed"), dict):
        raise BadInput(f"malformed run report {run / 'report.json'}: expected an object with 'dense' and 'compressed' figures")
    plan, plan_note = None, "no plan.json in the run folder"
    if (run / "plan.json").exists():
        try:
            plan = read_json(run / "plan.json", "plan")
        except BadInput as err:
            plan_note = f"plan.json ignored: {err}"
        if not isinstance(plan, dict):
            plan, plan_note = None, (plan_note if plan is None else f"plan.json ignored: {run / 'plan.json'} is not a JSON object")
    rr = RunReport(run, rep, plan)
    if plan is None:
        rr.notes.append(plan_note)
    rr.budget = parse_budget(rep.get("budget_detail") or [])
    _guard(rr.notes, "layers", lambda: _gather_layers(rr))
    _guard(rr.latency_notes, "latency", lambda: _gather_latency(rr, profile))
    _guard(rr.candidates_notes, "candidates", lambda: _gather_candidates(rr))
    _guard(rr.notes, "oracle", lambda: _gather_oracle(rr))
    return rr


def _guard(notes: list[str], what: str, fn) -> None:
    """Run one gatherer; an unexpected failure becomes a note, never a crash."""
    try:
        fn()
    except BadInput as err:
        notes.append(str(err))
    except Exception as err:  # noqa: BLE001 - a report must still be written
        notes.append(f"{what}: could not be gathered ({type(err).__name__}: {first_line(err)})")


# --------------------------------------------------------------------------- budget

_BUDGET_RE = re.compile(r"^(?P<name>.+?): (?P<value>\S+(?: \S+)?) <= (?P<limit>\S+(?: \S+)?): (?P<status>.+)$")


def parse_budget(lines: list[str]) -> list[BudgetLine]:
    """``budget_detail`` lines (``latency on cpu-ort: 0.38 ms <= 0.39 ms: met``) as rows."""
    out = []
    for line in lines:
        m = _BUDGET_RE.match(str(line))
        if m:
            status = m["status"]
            out.append(BudgetLine(m["name"], m["value"], m["limit"], "MISSED" not in status, status, str(line)))
        else:
            out.append(BudgetLine(str(line), "", "", "MISSED" not in str(line), "", str(line)))
    return out


# --------------------------------------------------------------------------- layers


def _input_shape(rr: RunReport) -> list[int] | None:
    """The run's input shape, from its manifest or its ONNX model; None when neither says."""
    from edgeprune.fileio import read_json

    shape = None
    man = rr.run_dir / "manifest.json"
    if man.exists():
        try:
            shape = read_json(man, "manifest").get("input_shape")
        except (BadInput, AttributeError):
            shape = None
    if not shape and (rr.run_dir / "model.onnx").exists():
        import onnx

        m = onnx.load(str(rr.run_dir / "model.onnx"), load_external_data=False)
        dims = m.graph.input[0].type.tensor_type.shape.dim
        shape = [d.dim_value or 1 for d in dims]
    return [int(s) for s in shape] if shape else None


def _gather_layers(rr: RunReport) -> None:
    import torch

    from edgeprune.graph import channel_groups, example_input

    mp = rr.run_dir / "model.pt"
    if not mp.exists():
        rr.layers_note = "no model.pt in the run folder: per-layer figures are not available"
        return
    comp = torch.load(mp, map_location="cpu", weights_only=False).eval()
    example = example_input(comp, shape=_input_shape(rr))
    g_comp = channel_groups(comp, example)
    comp_sigs = g_comp.signatures()
    dense_sigs = _dense_from_module(rr, comp_sigs)
    if dense_sigs is None:
        # the model was passed as a module object: dense widths from the channel scores (one per dense channel)
        sp = rr.run_dir / "state" / "scores.pt"
        if sp.exists():
            scores = torch.load(sp, map_location="cpu", weights_only=True)
            if set(scores) <= {g.id for g in g_comp.groups}:
                dense_sigs = g_comp.signatures({g.id: g.size for g in g_comp.groups} | {k: len(v) for k, v in scores.items()})
    if dense_sigs is None:
        rr.layers_note = (f"the dense model {rr.model!r} cannot be rebuilt here (it was passed as a module object); "
                          "only the compressed layers are shown")
    sizes: dict[str, int] = {}
    for name, info in g_comp.layers.items():
        d = (dense_sigs or {}).get(name)
        if info.out_group and d is not None:
            sizes.setdefault(info.out_group, d.out_channels)
    precisions = (rr.plan or {}).get("precisions") or {}
    comp_sigs = g_comp.signatures(dtypes={k: v for k, v in precisions.items() if isinstance(v, str)})
    rows = []
    for name, info in g_comp.layers.items():
        c = comp_sigs[name]
        d = (dense_sigs or {}).get(name, c)
        rows.append(LayerRow(name, c.op, info.in_group, info.out_group, d.in_channels, d.out_channels,
                             c.in_channels, c.out_channels, d.dtype, c.dtype, d.macs, c.macs))
    rr.layers = rows
    rr._sigs = (dense_sigs or {}, comp_sigs)  # type: ignore[attr-defined]
    kept = {g.id: g.size for g in g_comp.groups}
    rr.groups = [(gid, sizes[gid], kept[gid]) for gid in kept if gid in sizes]


def _dense_from_module(rr: RunReport, comp_sigs: dict) -> dict | None:
    """Dense layer signatures: the compressed ones with the dense model's channel counts (no second trace)."""
    try:
        from edgeprune.models import load_model

        dense = load_model(rr.model, pretrained=False)
    except Exception:  # noqa: BLE001 - a module object's type name, a moved file, a factory that fails: all mean 'not here'
        return None
    mods = dict(dense.named_modules())
    out = {}
    for name, sig in comp_sigs.items():
        m = mods.get(name)
        cin = getattr(m, "in_channels", getattr(m, "in_features", None))
        cout = getattr(m, "out_channels", getattr(m, "out_features", None))
        if cin is None or cout is None:
            return None
        out[name] = sig.with_channels(int(cin), int(cout))
    return out


# --------------------------------------------------------------------------- latency and predictor


def _targets(rr: RunReport) -> list[str]:
    tg = (rr.plan or {}).get("targets")
    names = list(tg) if isinstance(tg, dict) and tg else []
    if rr.target not in names:
        names.insert(0, rr.target)
    return names


def _profile_path(rr: RunReport, target: str, explicit: str | Path | None) -> Path:
    from edgeprune.profile.lut import default_profile_path, find_profile, shape_input_size

    if explicit is not None:
        return Path(explicit)
    p = (rr.plan or {}).get("profile")
    if isinstance(p, str) and target == rr.target:
        return Path(p)
    if isinstance(p, dict) and isinstance(p.get(target), str):
        return Path(p[target])
    model = (rr.plan or {}).get("model") or rr.model
    shape = _input_shape(rr)
    size = shape_input_size(shape) if shape else None
    return find_profile(target, model, input_size=size) or default_profile_path(target, model, input_size=size)


def _gather_latency(rr: RunReport, explicit: str | Path | None) -> None:
    from edgeprune.profile.lut import load_profile

    sigs = getattr(rr, "_sigs", None)
    first = True
    for t in _targets(rr):
        path = _profile_path(rr, t, explicit if first else None)
        is_run_target = t == rr.target
        first = False
        if not path.exists():
            rr.latency_notes.append(
                f"no latency profile for {rr.model} on {t} (looked for {path}); per-layer latency needs one: "
                f"`edgeprune profile --target {t} --model {rr.model}`")
            if is_run_target:
                rr.pred_notes.append(f"no latency profile for {t}: no predictor to compare with the measurements")
            continue
        try:
            prof = load_profile(path, target=t, allow_incomplete=True)
        except BadInput as err:
            rr.latency_notes.append(f"profile for {t} unusable: {err}")
            continue
        if not prof.complete:
            rr.latency_notes.append(f"the profile {path} is incomplete (a run in progress or interrupted): "
                                    "per-layer figures are provisional")
        pred = prof.predictor()
        if is_run_target:
            _gather_predictor(rr, prof, path)
        if sigs is None:
            rr.latency_notes.append(f"{t}: per-layer latency needs the layer list ({rr.layers_note or 'not available'})")
            continue
        dense_sigs, comp_sigs = sigs
        tl = TargetLatency(t, prof.unit, str(path), prof.complete, {}, {})
        for name, cs in comp_sigs.items():
            ds = dense_sigs.get(name)
            tl.dense[name] = pred.layer_cost(ds) if ds is not None and pred.has(ds) else None
            tl.compressed[name] = pred.layer_cost(cs) if pred.has(cs) else None
            if tl.compressed[name] is None or (ds is not None and tl.dense[name] is None):
                tl.unpriced.append(name)
        if not tl.unpriced and dense_sigs and prof.complete and (prof.data.get("calibration") or {}).get("coef"):
            tl.dense_total = pred.model_cost(dense_sigs)
            tl.compressed_total = pred.model_cost(comp_sigs)
        if is_run_target and prof.unit == "ms":
            tl.dense_measured = rr.report["dense"].get("latency_ms")
            tl.compressed_measured = rr.report["compressed"].get("latency_ms")
            for label, pv, mv in (("this run: dense", tl.dense_total, tl.dense_measured),
                                  ("this run: compressed", tl.compressed_total, tl.compressed_measured)):
                if pv is not None and mv:
                    rr.pred_points.append(PredPoint(label, pv, mv, "this run"))
        if tl.unpriced:
            rr.latency_notes.append(f"{t}: the profile has no table for {len(tl.unpriced)} layer shape(s) "
                                    f"({', '.join(tl.unpriced[:4])}{', ...' if len(tl.unpriced) > 4 else ''}): not priced")
        if any(v is not None for v in tl.compressed.values()):
            rr.latency.append(tl)


def _gather_predictor(rr: RunReport, prof, path: Path) -> None:
    rr.pred_unit = prof.unit
    rr.pred_target = prof.target_name
    rr.audit_profile = str(path)
    a = prof.audit
    if a:
        rr.audit = a
        for row in a.get("configs") or []:
            try:
                kind = "audit aligned" if row.get("aligned") else "audit unaligned"
                rr.pred_points.append(PredPoint(str(row.get("name", "")), float(row["predicted"]), float(row["measured"]), kind))
            except (KeyError, TypeError, ValueError):
                continue
        d = a.get("dense") or {}
        meas = d.get("measured")
        meas = meas.get("median") if isinstance(meas, dict) else meas
        if d.get("predicted") is not None and meas:
            rr.pred_points.append(PredPoint("audit: dense", float(d["predicted"]), float(meas), "audit dense"))
    else:
        rr.pred_notes.append(f"the profile {path} has no audit: run `edgeprune profile --target {prof.target_name} "
                             f"--model {prof.model_name} --audit 30` to measure how good the predictor is")
    for i, at in enumerate((rr.plan or {}).get("attempts") or []):
        if isinstance(at, dict) and at.get("predicted_ms") is not None and at.get("measured_ms"):
            rr.pred_points.append(PredPoint(f"this run: plan attempt {i + 1}", float(at["predicted_ms"]),
                                            float(at["measured_ms"]), "this run"))


# --------------------------------------------------------------------------- candidates


def _gather_candidates(rr: RunReport) -> None:
    rep = rr.report
    d, c = rep["dense"], rep["compressed"]

    def top1(v: Any) -> float | None:
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)

    if d.get("latency_ms") is not None:
        rr.candidates.append(Candidate("dense", float(d["latency_ms"]), top1(d.get("top1")), "dense"))
    if c.get("latency_ms") is not None:
        rr.candidates.append(Candidate("compressed (chosen)", float(c["latency_ms"]), top1(c.get("top1")), "chosen"))
    extra = rep.get("candidates")
    if isinstance(extra, list):
        for i, cand in enumerate(extra):
            if isinstance(cand, dict) and cand.get("latency_ms") is not None:
                rr.candidates.append(Candidate(str(cand.get("label") or cand.get("name") or f"candidate {i + 1}"),
                                               float(cand["latency_ms"]), top1(cand.get("top1")), "candidate"))
    for i, at in enumerate((rr.plan or {}).get("attempts") or []):
        if isinstance(at, dict) and at.get("measured_ms"):
            rr.candidates.append(Candidate(f"plan attempt {i + 1}", float(at["measured_ms"]), top1(at.get("top1")), "attempt"))
    if not isinstance(extra, list):
        planner = (rr.plan or {}).get("planner") or (rep.get("config") or {}).get("planner")
        rr.candidates_notes.append(
            "this run recorded top-1 only for the dense and the final model"
            + (f" (the {planner} planner's intermediate candidates were timed, not evaluated for accuracy)" if planner else "")
            + "; models with a latency but no top-1 are marked along the bottom axis")


# --------------------------------------------------------------------------- oracle


def _as_grades(obj: Any) -> list[dict[str, Any]] | None:
    if isinstance(obj, dict):
        if "spearman" in obj:
            return [obj]
        for key in ("grades", "criteria", "oracle"):
            if key in obj:
                return _as_grades(obj[key])
        if obj and all(isinstance(v, dict) and "spearman" in v for v in obj.values()):
            return [{"criterion": k, **v} for k, v in obj.items()]
        return None
    if isinstance(obj, list):
        out = [g for g in obj if isinstance(g, dict) and "spearman" in g]
        return out or None
    return None


def _gather_oracle(rr: RunReport) -> None:
    from edgeprune.fileio import read_json

    sources = [rr.report.get("oracle"), (rr.report.get("importance") or {}).get("oracle")
               if isinstance(rr.report.get("importance"), dict) else None]
    for name in ("oracle.json", "state/oracle.json"):
        p = rr.run_dir / name
        if p.exists():
            sources.append(read_json(p, "oracle results"))
    for src in sources:
        grades = _as_grades(src)
        if grades:
            crit = rr.criterion
            for g in grades:
                g.setdefault("criterion", crit or "?")
            rr.oracle = sorted(grades, key=lambda g: _num(g.get("spearman")), reverse=True)
            return
    rr.oracle_note = (f"the oracle check (remove one channel at a time, measure the loss change) was not run for this run, "
                      f"so how well '{rr.criterion or '?'}' ranks channels is not known here")


def _num(v: Any) -> float:
    """A sortable number: None and NaN sort last (as -inf)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return -math.inf
    return -math.inf if math.isnan(f) else f
