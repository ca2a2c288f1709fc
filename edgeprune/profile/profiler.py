"""Measure a model's latency look-up table on a target, calibrate the predictor, audit it.

``profile()`` is resumable: records are written (atomically) every few seconds
and on any exception, and a later run with ``resume=True`` measures only the
signatures the file does not have yet. See docs/profile.md for the grid, the
timing protocols and the file schema.
"""
from __future__ import annotations

import os
import platform
import random
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeprune.errors import BackendUnavailable, BadInput
from edgeprune.graph.signature import LayerSignature
from edgeprune.profile.lut import (
    SCHEMA,
    SCHEMA_VERSION,
    Predictor,
    Profile,
    default_profile_path,
    find_profile,
    fit_calibration,
    model_profiles,
    profile_input_size,
    profile_model_name,
    validate,
)
from edgeprune.profile.timing import (
    ModelProtocol,
    Timing,
    TimingProtocol,
    boosted_priority,
    fixed_threads,
    interleaved_rounds,
    pinned,
    spread,
)

if TYPE_CHECKING:
    from torch import nn

    from edgeprune.config import Target
    from edgeprune.graph import ChannelGraph
    from edgeprune.ui import UI

#: The per-layer protocol: layers take 10 us - 1 ms here, so a few hundred runs cost well under a second.
LAYER_PROTOCOL = TimingProtocol(warmup=10, min_runs=60, max_runs=600, round_size=30, rel_tol=0.01, max_seconds=0.6)

SAVE_EVERY_S = 2.0


# --------------------------------------------------------------------------- the grid


def aligned_grid(total: int, multiple: int) -> list[int]:
    """Channel counts measured for a group of ``total`` channels on the target's granularity.

    Every ``multiple`` step in the top half of the range (where planners choose:
    cutting a layer below half costs accuracy fast, and latency differences
    between neighbouring choices are what the planner trades there), doubling
    steps below (``multiple``, ``2*multiple``, ``4*multiple`` ...: latency is
    overhead-dominated and smooth in relative terms down there), plus ``total``
    itself (a layer may always stay whole, even when ``total`` is unaligned).
    """
    if total <= multiple:
        return [total]
    half = total / 2
    vals = {v for v in range(multiple, total, multiple) if v >= half}
    v = multiple
    while v < half:
        vals.add(v)
        v *= 2
    vals.add(total)
    return sorted(vals)


def unaligned_grid(aligned: Sequence[int], multiple: int) -> list[int]:
    """Off-granularity probes: one below each aligned count (``8k - 1``), the worst layout case on ORT.

    The predictor interpolates unaligned counts on this lattice and aligned
    counts on the aligned one, so the 2x alignment effect is measured, not
    smeared by interpolating across it.
    """
    if multiple <= 1:
        return []
    return sorted({a - 1 for a in aligned if a - 1 >= 1 and (a - 1) % multiple != 0} - set(aligned))


def make_grid(graph: ChannelGraph, target: Target, unaligned: bool = True) -> dict[str, dict[str, list[int]]]:
    """Per prunable group: ``{"aligned": [...], "unaligned": [...]}`` channel counts to measure."""
    m = max(1, target.channel_multiple)
    out = {}
    for g in graph.groups:
        if not g.prunable:
            continue
        a = aligned_grid(g.size, m)
        out[g.id] = {"aligned": a, "unaligned": unaligned_grid(a, m) if unaligned else []}
    return out


def _normalise_grid(grid: Any, graph: ChannelGraph, target: Target) -> dict[str, dict[str, list[int]]]:
    if grid is None or grid == "default":
        return make_grid(graph, target)
    if grid == "aligned":
        return make_grid(graph, target, unaligned=False)
    if isinstance(grid, Mapping):
        out = {}
        for gid, counts in grid.items():
            if isinstance(counts, Mapping):
                out[gid] = {"aligned": sorted(set(counts.get("aligned", []))), "unaligned": sorted(set(counts.get("unaligned", [])))}
            else:
                out[gid] = {"aligned": sorted({int(c) for c in counts}), "unaligned": []}
        return out
    raise BadInput(f"unknown grid {grid!r} (use 'default', 'aligned' or a mapping group -> counts)")


def layer_points(graph: ChannelGraph, grid: Mapping[str, Mapping[str, Sequence[int]]], precisions: Sequence[str]) -> list[LayerSignature]:
    """Every layer configuration to measure: per layer shape, the product of the c_in and c_out counts.

    Layers sharing a shape (signature without channel counts) share one table;
    its axes are the union of their groups' counts, measured as a full product so
    the table is a complete rectangular grid. fp32 gets the aligned and the
    unaligned lattice; lower precisions the aligned one only (see docs/profile.md).
    """
    axes: dict[str, tuple[LayerSignature, dict[str, set[int]]]] = {}
    for info in graph.layers.values():
        sig = info.signature.with_channels(info.signature.in_channels, info.signature.out_channels, "fp32")
        entry = axes.setdefault(sig.shape_key(), (sig, {"in_a": set(), "in_u": set(), "out_a": set(), "out_u": set()}))[1]
        for side, gid, full in (("in", info.in_group, sig.in_channels), ("out", info.out_group, sig.out_channels)):
            if gid is not None and gid in grid:
                entry[f"{side}_a"].update(grid[gid].get("aligned", []))
                entry[f"{side}_u"].update(grid[gid].get("unaligned", []))
            else:
                entry[f"{side}_a"].add(full)
    points: dict[str, LayerSignature] = {}
    for sig, ax in axes.values():
        for dtype in precisions:
            ins = ax["in_a"] | (ax["in_u"] if dtype == "fp32" else set())
            outs = ax["out_a"] | (ax["out_u"] if dtype == "fp32" else set())
            for ci in sorted(ins):
                for co in sorted(outs):
                    if sig.groups == -1 and ci != co:
                        continue
                    s = sig.with_channels(ci, co, dtype)
                    points.setdefault(s.key(), s)
    return list(points.values())


# --------------------------------------------------------------------------- helpers


def _cpu_model() -> str:
    from edgeprune.environment import cpu_model

    return cpu_model()


def _versions() -> dict[str, str]:
    from edgeprune.environment import versions

    return {"python": platform.python_version(),
            **versions(("edgeprune", "onnxruntime", "onnx", "torch", "numpy", "torch-pruning"))}


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


EMULATED_NOTE = ("EMULATED board (QEMU user-mode emulation): these timings mean nothing about a real device; "
                 "the board only proves the engine runs correctly")


def is_emulated(target: Target) -> bool:
    """True when ``target`` is an emulated board (``emulated = true`` in its ``[options]``): its timings mean nothing."""
    return bool(target.options.get("emulated", False))


def _target_spec(target: Target) -> dict[str, Any]:
    return {
        "name": target.name, "backend": target.backend, "device": target.device, "host": target.host,
        "threads": target.threads, "precisions": list(target.precisions), "channel_multiple": target.channel_multiple,
        "clock_mhz": target.clock_mhz, "options": dict(target.options),
    }


def _protocol_dict(p: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(p)


def _model_and_name(model: Any, model_name: str | None) -> tuple[nn.Module, str]:
    from edgeprune.models import load_model

    if isinstance(model, str):
        return load_model(model), model_name or profile_model_name(model)
    return model.eval(), model_name or profile_model_name(model)


def _example_for(model_name: str, example: Any) -> Any:
    """``example``, or one of the zoo model's input shape (a user model must pass one: no size is guessed)."""
    if example is not None:
        return example
    from edgeprune.graph import example_input
    from edgeprune.models import model_spec

    spec = model_spec(model_name)
    return example_input(None, shape=spec.input_shape if spec is not None else None)


def _profile_file(target: Target, model_name: str, example: Any, profiles: str | Path | None,
                  resume: bool, recalibrate: bool) -> tuple[Path, Path | None, Any]:
    """``(out, seed_from, example)`` for a profile written where ``find_profile`` looks: ``out`` keyed by the input
    size (:func:`~edgeprune.profile.lut.default_profile_path`), ``seed_from`` the profile found for this model and
    size elsewhere (shipped, or the size-less legacy name: read, never written), ``example`` the one given, else the
    zoo model's own, else (``resume``/``recalibrate``) the shape of this model's newest profile, else None."""
    from edgeprune.models import model_spec

    if example is None:
        if model_spec(model_name) is not None:
            example = _example_for(model_name, None)
        elif resume or recalibrate:
            example = next((e for e in map(stored_example, model_profiles(target.name, model_name, profiles))
                            if e is not None), None)
    size = profile_input_size(example)
    out = default_profile_path(target.name, model_name, profiles, size)
    found = find_profile(target.name, model_name, profiles, size)
    return out, (found if found is not None and found != out else None), example


def _backend_for(target: Target):
    from edgeprune.backends import get_backend

    backend = get_backend(target.backend)
    ok, reason = backend.availability(target)
    if not ok:
        raise BackendUnavailable(f"target {target.name}: {reason}")
    return backend


def _supported_precisions(target: Target, backend: Any) -> tuple[list[str], list[str]]:
    """(precisions to measure, notes about the ones skipped)."""
    out, notes = [], []
    for p in target.precisions:
        ok, why = backend.precision_support(p)
        if not ok:
            notes.append(f"{p} not measured: {why}")
            continue
        out.append(p)
    if not out:
        raise BackendUnavailable(f"target {target.name}: none of its precisions ({', '.join(target.precisions)}) can be timed here")
    return out, notes


def random_widths(graph: ChannelGraph, rng: random.Random, aligned: bool, multiple: int, low: float = 0.3) -> dict[str, int]:
    """A random pruned configuration: each prunable group keeps a uniform fraction in [low, 1].

    ``aligned`` rounds every width to the target's multiple; otherwise widths are
    any integer (most of them then unaligned).
    """
    from edgeprune.prune.granularity import round_channels

    w = {}
    for g in graph.prunable:
        unit = int(getattr(g, "unit", 1) or 1)
        k = max(1, round(rng.uniform(low, 1.0) * g.size))
        k = round_channels(k, multiple, g.size) if aligned else k
        w[g.id] = max(unit, k // unit * unit)
    return w


def _pruned(model: nn.Module, example: Any, widths: Mapping[str, int]) -> nn.Module:
    from edgeprune.prune import prune

    keep = {gid: list(range(k)) for gid, k in widths.items()}
    return prune(model, keep, example)


def measure_configs(
    model: nn.Module,
    example: Any,
    target: Target,
    configs: Mapping[str, Mapping[str, int] | nn.Module],
    protocol: ModelProtocol | None = None,
    ui: UI | None = None,
    desc: str = "whole models",
) -> tuple[dict[str, Timing], dict[str, list[float]]]:
    """Measure several whole models interleaved (pruned configurations of ``model`` or modules).

    Returns the timings and each one's per-pass values (test-retest).
    """
    from edgeprune.ui import QUIET

    ui = ui or QUIET
    with tempfile.TemporaryDirectory(prefix="edgeprune-models-") as d:
        return measure_engines(_export_engines(model, example, target, configs, (), Path(d), ui), target, protocol, ui, desc)


def measure_engines(
    engines: Mapping[str, Path | tuple[Path, Sequence[str]]],
    target: Target,
    protocol: ModelProtocol | None = None,
    ui: UI | None = None,
    desc: str = "whole models",
) -> tuple[dict[str, Timing], dict[str, list[float]]]:
    """Measure several engine files interleaved with :class:`ModelProtocol`.

    ``engines`` maps a name to an ONNX file, or to ``(file, optimisers to disable)``
    for an int8 QDQ engine whose session must keep its QDQ pairs (see
    ``edgeprune.quant.ort_int8``). Returns the timings and each one's per-pass values.
    """
    from edgeprune.ui import QUIET

    ui = ui or QUIET
    protocol = protocol or ModelProtocol()
    backend = _backend_for(target)
    files = {n: (e, []) if isinstance(e, (str, Path)) else (Path(e[0]), list(e[1])) for n, e in engines.items()}
    try:
        runners = {n: backend.make_runner(p, target, dis) for n, (p, dis) in files.items()}
    except NotImplementedError:
        runners = None
    if runners is None:  # no in-process runner: one model after another with the backend's own protocol
        per: dict[str, list[float]] = {n: [] for n in files}
        out = {}
        for _ in range(max(1, protocol.passes)):
            for n, (p, _dis) in files.items():
                t = backend.time_onnx(p, target, LAYER_PROTOCOL)
                per[n].append(t.median)
                out[n] = t
        return {n: Timing(float(sorted(v)[len(v) // 2]), out[n].p10, out[n].p90, out[n].count, out[n].unit) for n, v in per.items()}, per
    steps = max(protocol.passes, protocol.max_passes) * protocol.rounds * len(runners)
    with ui.progress(desc, total=steps) as bar, boosted_priority(protocol.nice), pinned(protocol.pin), \
            fixed_threads(protocol.threads):
        return interleaved_rounds(runners, protocol, on_step=bar.advance)


def measure_model(model: Any, example: Any, target: Target | str, protocol: ModelProtocol | TimingProtocol | None = None) -> Timing:
    """Measured latency of one whole model on ``target`` (ONNX export + backend), whole-model protocol.

    A :class:`TimingProtocol` times it with the backend's plain ``time_onnx``
    instead. On a simulated target (cycles) the model's cost is the sum of its
    layers' simulated cycles.
    """
    from edgeprune.config import get_target

    target = get_target(target)
    model, name = _model_and_name(model, None)
    example = _example_for(name, example)
    backend = _backend_for(target)
    if backend.unit == "cycles":
        return _simulated_model(model, example, target, backend)
    if isinstance(protocol, TimingProtocol):
        from edgeprune.compile.onnx_export import export_onnx

        with tempfile.TemporaryDirectory() as d:
            p = export_onnx(model, example, Path(d) / "model.onnx")
            return backend.time_onnx(p, target, protocol)
    timings, _ = measure_configs(model, example, target, {"model": model}, protocol)
    return timings["model"]


def _simulated_model(model: nn.Module, example: Any, target: Target, backend: Any, widths: Mapping[str, int] | None = None) -> Timing:
    from edgeprune.graph import channel_groups

    graph = channel_groups(model, example)
    dtype = "int8" if "int8" in target.precisions else target.precisions[0]
    sigs = graph.signatures(widths, {n: dtype for n in graph.layers})
    total = sum(backend.time_layer(s, target, LAYER_PROTOCOL).median for s in sigs.values())
    return Timing(total, total, total, 1, backend.unit)


# --------------------------------------------------------------------------- profile


def device_fingerprint(target: Target) -> dict[str, Any]:
    """This machine's fingerprint for ``target`` (:func:`edgeprune.environment.device_fingerprint`)."""
    from edgeprune.environment import device_fingerprint as fp

    return fp(target)


def _example_dict(example: Any) -> dict[str, Any]:
    shape = getattr(example, "shape", None)
    return {"shape": [int(d) for d in shape] if shape is not None else None, "dtype": str(getattr(example, "dtype", ""))}


def stored_example(path: str | Path | None) -> Any:
    """The example input a (possibly interrupted) profile was measured with: zeros of its stored shape, or None.

    ``profile`` stores the example's shape in the file from the first save on, so ``--resume`` of a user
    model (whose input size cannot be guessed) needs no ``--input-shape``.
    """
    if path is None or not Path(path).is_file():
        return None
    from edgeprune.fileio import read_json

    try:
        doc = read_json(Path(path), "profile file")
    except BadInput:
        return None
    shape = ((doc or {}).get("example") or {}).get("shape") if isinstance(doc, dict) else None
    if not shape:
        return None
    from edgeprune.graph import example_input

    return example_input(None, shape=[int(d) for d in shape])


def _check_resumable(doc: Mapping[str, Any], src: Path, target: Target, model_name: str, recalibrate: bool) -> None:
    """A file measured on another device is not continued: its records would mix two machines.

    ``recalibrate`` keeps the tables of another machine of the same ISA family (the per-model term is
    measured again here); otherwise the one-line error says to measure afresh.
    """
    from edgeprune.profile.device import ForeignProfile, device_mismatch, same_isa_family

    here = device_fingerprint(target)
    diff = device_mismatch(doc, here)
    if not diff:
        return
    if recalibrate and same_isa_family(doc, here):
        return
    why = "another ISA family, its tables do not carry over" if recalibrate else "its records would mix two machines"
    raise ForeignProfile(f"{src} was measured on another device ({'; '.join(diff)}; {why}): measure it here with "
                         f"`edgeprune profile --target {target.name} --model {model_name} --fresh`")


def _adopt_this_device(doc: dict[str, Any], target: Target) -> None:
    """Recalibrating on this machine: the profile now describes this device; the tables' origin is kept."""
    from edgeprune.profile.device import device_mismatch, stored_fingerprint

    here = device_fingerprint(target)
    diff = device_mismatch(doc, here)
    if not diff:
        doc["fingerprint"] = here
        return
    doc.setdefault("tables_fingerprint", stored_fingerprint(doc))
    note = (f"layer tables measured on another device of the same ISA family ({'; '.join(diff)}); "
            f"per-model term re-fitted on this machine ({here.get('cpu')})")
    doc.setdefault("notes", []).append(note)
    doc["fingerprint"] = here
    doc["cpu"] = here.get("cpu")
    doc.setdefault("software", {}).update(_versions())


def _new_doc(target: Target, backend: Any, model_name: str, grid: Mapping, protocol: TimingProtocol, mprotocol: ModelProtocol) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "target": _target_spec(target),
        "model": model_name,
        "emulated": is_emulated(target),
        "unit": backend.unit,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "updated": None,
        "complete": False,
        "software": _versions(),
        "cpu": _cpu_model(),
        "fingerprint": device_fingerprint(target),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "protocol": {"layer": _protocol_dict(protocol), "model": _protocol_dict(mprotocol)},
        "grid": {"policy": "top half every channel_multiple step, doubling below, plus the full size; fp32 also at 8k-1 probes",
                 "groups": {k: dict(v) for k, v in grid.items()}},
        "precisions": [],
        "notes": [],
        "records": {},
        "dense_latency": None,
        "calibration": None,
        "audit": None,
        "timings_s": {},
    }


def profile(
    model: Any,
    example: Any,
    target: Target | str,
    *,
    model_name: str | None = None,
    grid: Any = None,
    protocol: TimingProtocol | None = None,
    out: str | Path | None = None,
    profiles: str | Path | None = None,
    resume: bool = True,
    audit: int = 0,
    ui: UI | None = None,
    model_protocol: ModelProtocol | None = None,
    calibration: int = 6,
    seed: int = 0,
    notes: Sequence[str] = (),
    recalibrate: bool = False,
    _on_record: Callable[[int], None] | None = None,
) -> Profile:
    """Measure the latency table of every layer signature of ``model`` on ``target``, calibrate, audit.

    - ``grid``: None/"default" (see :func:`aligned_grid` / :func:`unaligned_grid`),
      "aligned" (no unaligned probes), or ``{group_id: [counts]}``.
    - ``protocol``: the per-layer :class:`TimingProtocol` (default :data:`LAYER_PROTOCOL`);
      ``model_protocol`` the whole-model :class:`ModelProtocol`.
    - ``out``: the profile file (default ``{profiles}/{target}--{model}--{H}x{W}.json``, ``profiles``
      defaulting to the user cache: :func:`~edgeprune.profile.lut.default_profile_path`), written
      atomically every few seconds and on interruption; ``resume`` reuses its records
      (``recalibrate`` with no ``out`` and no file there yet starts from a shipped profile's tables).
    - ``calibration``: pruned configurations (half aligned) measured whole, besides the
      dense model, to fit the per-model term.
    - ``audit``: N random pruned configurations (half aligned) measured whole and
      compared with the prediction; the figures are stored in the file.
    - ``recalibrate``: keep the layer tables of the file in ``out`` but measure the
      per-model term (and the audit) again: after a predictor change, or on a quieter machine.
    """
    from edgeprune.config import get_target
    from edgeprune.graph import channel_groups
    from edgeprune.ui import QUIET

    ui = ui or QUIET
    target = get_target(target)
    backend = _backend_for(target)
    model, model_name = _model_and_name(model, model_name)
    protocol = protocol or LAYER_PROTOCOL
    mprotocol = model_protocol or ModelProtocol()
    seed_from = None
    if not out:
        out, seed_from, example = _profile_file(target, model_name, example, profiles, resume, recalibrate)
    out = Path(out)
    if example is None and resume:
        example = stored_example(out) if out.exists() else stored_example(seed_from) if recalibrate and seed_from else None
    example = _example_for(model_name, example)
    t_start = time.perf_counter()

    graph = channel_groups(model, example)
    grid_n = _normalise_grid(grid, graph, target)
    precisions, skip_notes = _supported_precisions(target, backend)

    src = out if out.exists() else seed_from if recalibrate else None  # a fresh run measures this machine
    doc = _resumed_doc(src, out, target, model_name, recalibrate) if resume and src is not None else None
    if recalibrate and doc is None:
        raise BadInput(f"--recalibrate needs an existing profile to keep the layer tables of: {out} does not exist")
    if doc is None:
        doc = _new_doc(target, backend, model_name, grid_n, protocol, mprotocol)
    doc["example"] = _example_dict(example)
    doc["grid"]["groups"] = {k: dict(v) for k, v in grid_n.items()}
    doc["precisions"] = precisions
    doc["emulated"] = is_emulated(target)
    for n in ([EMULATED_NOTE] if doc["emulated"] else []) + list(skip_notes) + list(notes):
        if n not in doc["notes"]:
            doc["notes"].append(n)
    doc["machine"]["loadavg_start"] = _loadavg()

    points = layer_points(graph, grid_n, precisions)
    todo = [s for s in points if s.key() not in doc["records"]]
    ui.log(f"profiling {model_name} on {target.name}: {len(points)} layer configurations "
           f"({len(points) - len(todo)} already in {out}), precisions {', '.join(precisions)}")

    def save() -> None:
        from edgeprune.fileio import write_json

        doc["updated"] = datetime.now(UTC).isoformat(timespec="seconds")
        write_json(out, doc)

    t_layers = time.perf_counter()
    try:
        with ui.progress("layer tables", total=len(todo)) as bar, boosted_priority(mprotocol.nice) as prio, \
                pinned(mprotocol.pin) as pin, fixed_threads(mprotocol.threads):
            doc["machine"]["priority"] = prio
            doc["machine"]["affinity"] = pin
            if todo:
                _measure_layers(doc, todo, backend, target, protocol, ui, bar, save, _on_record)
    finally:
        doc["timings_s"]["layers"] = round(doc["timings_s"].get("layers", 0.0) + time.perf_counter() - t_layers, 2)
        save()

    prof = Profile(doc, out)
    want_audit = bool(audit) and (doc.get("audit") is None or doc["audit"].get("n") != audit or not resume)
    measured = None
    if doc.get("calibration") is None or doc.get("dense_latency") is None:
        measured = _calibrate_step(prof, model, example, graph, target, backend, mprotocol, calibration, seed, ui,
                                   audit if want_audit else 0)
        save()
    if want_audit:
        t_aud = time.perf_counter()
        doc["audit"] = run_audit(prof, model, example, target, audit, mprotocol, seed=seed + 1000, ui=ui, graph=graph,
                                 measured=measured)
        doc["timings_s"]["audit"] = round(time.perf_counter() - t_aud, 2)
    doc["machine"]["loadavg_end"] = _loadavg()
    doc["timings_s"]["total_this_run"] = round(time.perf_counter() - t_start, 2)
    doc["complete"] = True
    save()
    prof._predictor = None
    return prof


def _resumed_doc(src: Path, out: Path, target: Target, model_name: str, recalibrate: bool) -> dict[str, Any]:
    """The profile document in ``src`` to go on from: checked against this target and device; its per-model parts
    cleared when it was made for another model (the tables serve any model) or when recalibrating."""
    from edgeprune.fileio import read_json

    doc = read_json(src, "profile file")
    validate(doc, src)
    if doc["target"]["name"] != target.name:
        raise BadInput(f"{out} holds a profile for target {doc['target']['name']!r}, not {target.name!r}: choose another --out")
    _check_resumable(doc, src, target, model_name, recalibrate)
    if recalibrate:
        _adopt_this_device(doc, target)
    else:
        doc.setdefault("fingerprint", device_fingerprint(target))  # the check passed: measured here
    if doc.get("model") != model_name:
        doc["notes"].append(f"records reused from a profile of {doc.get('model')} for {model_name}")
        doc.update(model=model_name, calibration=None, dense_latency=None, audit=None, complete=False)
    elif recalibrate:
        doc.update(calibration=None, dense_latency=None, audit=None, complete=False)
    return doc


def _calibrate_step(prof: Profile, model: Any, example: Any, graph: Any, target: Target, backend: Any,
                    mprotocol: ModelProtocol, calibration: int, seed: int, ui: UI, audit: int) -> Any:
    """Fit the per-model term (timed into the document); with ``audit`` the audit's configurations are measured
    in the same interleaved session and returned for :func:`run_audit`, else None."""
    t_cal = time.perf_counter()
    extra = audit_configs(graph, target, audit, seed + 1000) if audit and backend.unit != "cycles" else None
    measured = _calibrate(prof, model, example, graph, target, backend, mprotocol, calibration, seed, ui, extra)
    prof.data["timings_s"]["calibration+audit" if extra else "calibration"] = round(time.perf_counter() - t_cal, 2)
    prof._predictor = None
    return measured if extra else None


def _measure_layers(doc: dict[str, Any], todo: Sequence[LayerSignature], backend: Any, target: Target,
                    protocol: TimingProtocol, ui: UI, bar: Any, save: Callable[[], None],
                    on_record: Callable[[int], None] | None) -> None:
    """Measure ``todo`` on the backend's runner pool (every free board of a farm; this machine otherwise).

    Each result goes into ``doc["records"]`` as it comes (in this thread); the file is written
    every :data:`SAVE_EVERY_S` seconds. ``on_record(i)`` runs before the i-th result is stored
    (tests interrupt there).
    """
    from edgeprune.profile.farm import measure_all

    last_save = time.perf_counter()
    with backend.runner_pool(target, protocol, ui.log) as pool:
        if len(pool.runners) > 1:
            ui.log(f"spreading {len(todo)} layer configurations over {pool.describe}")
            doc["machine"]["runners"] = [r.name for r in pool.runners]
        count = 0

        def store(sig: LayerSignature, timing: Timing, meta: dict) -> None:
            nonlocal last_save, count
            if on_record is not None:
                on_record(count)
            count += 1
            rec = {"signature": sig.to_dict(), **timing.to_dict()}
            rec.update({k: v for k, v in meta.items() if k in ("layout", "nodes") or not isinstance(v, (dict, list))})
            doc["records"][sig.key()] = rec
            bar.advance(info=f"{sig.op} {sig.in_channels}x{sig.out_channels} {sig.dtype}")
            if time.perf_counter() - last_save > SAVE_EVERY_S:
                save()
                last_save = time.perf_counter()

        measure_all(todo, pool, store, log=ui.log)


# above this many layer configurations compress prices a model with the device cost model instead of measuring
# its exhaustive table: MobileNetV2 at 64 px has 104,451 (about an hour on 2 cores), ResNet-56 at 32 px 3,600
EXHAUSTIVE_LIMIT = 20_000
# up to this many the exhaustive table is measured even where a device model exists: a minute or two, and exact
# (ResNet-56, 3,600 configurations, measured in 59 s on the idle EPYC: 97% of 30 audited configurations within 5%)
EXACT_PREFERRED = 4_000
SECONDS_PER_CONFIG = 0.035  # measured here: 52k configurations of MobileNetV2 in 20 min on a loaded 2-core EPYC


def exhaustive_size(graph: ChannelGraph, target: Target) -> int:
    """How many layer configurations the exhaustive per-model table of ``graph`` on ``target`` would measure."""
    from edgeprune.backends import get_backend

    precisions, _ = _supported_precisions(target, get_backend(target.backend))
    return len(layer_points(graph, make_grid(graph, target), precisions))


def local_profile(model: Any, target: Target | str, model_name: str | None = None, profiles: str | Path | None = None,
                  ui: UI | None = None, example: Any = None) -> Path:
    """A profile of ``model`` on ``target`` measured on this device: the one found if it matches, else made so.

    None found, or one from another device (the shipped tables on another CPU): the model is priced here,
    by its exhaustive table when that is small (about a minute for the zoo's ResNets), else by this
    device's cost model (:func:`_measure_here`). Another CPU's tables are not re-fitted: that priced
    ResNet-56 29% off relative to dense (``edgeprune profile --recalibrate`` still does it on request).
    The result is written to ``profiles`` (default: the user cache), which :func:`find_profile` reads
    first. An interrupted one is finished (:func:`resume_profile`). What ``edgeprune demo`` runs first.
    """
    from edgeprune.config import get_target
    from edgeprune.fileio import read_json
    from edgeprune.profile.device import measured_elsewhere
    from edgeprune.ui import QUIET

    ui = ui or QUIET
    target = get_target(target)
    model_name = model_name or profile_model_name(model)
    if example is None and isinstance(model_name, str):
        from edgeprune.models import model_spec

        example = _example_for(model_name, None) if model_spec(model_name) is not None else None
    found = find_profile(target.name, model_name, profiles, profile_input_size(example))
    if found is None:
        ui.log(f"no profile for {model_name} on {target.name}")
        return _measure_here(model, example, target, model_name, profiles, ui)
    doc = read_json(found, "profile file")
    validate(doc, found)
    here = device_fingerprint(target)
    diff = measured_elsewhere(doc, here)
    if not diff:
        if not doc.get("complete"):
            ui.log(f"finishing the interrupted profile {found}")
            return resume_profile(found, model, target, ui, example).path
        return found
    # Not re-fitted: another CPU's tables re-fitted here priced ResNet-56 at a median 29% off relative to dense
    # (0 of 30 audited configurations within 5%; measured here: 29 of 30). `profile --recalibrate` still does it.
    ui.log(f"profile {found} was measured on another device ({'; '.join(diff)}): pricing {model_name} here")
    return _measure_here(model, example, target, model_name, profiles, ui, resume=False)


def _measure_here(model: Any, example: Any, target: Target, model_name: str, profiles: str | Path | None, ui: UI,
                  resume: bool = True) -> Path:
    """A profile of ``model`` measured on this device: its exhaustive table, or the device cost model's pricing
    when the table is big (:func:`~edgeprune.costmodel.calibrate.price_with_device_model`)."""
    from edgeprune.costmodel.calibrate import price_with_device_model
    from edgeprune.graph import channel_groups

    m, _ = _model_and_name(model, model_name)
    ex = _example_for(model_name, example)
    priced = price_with_device_model(m, ex, target, configurations=exhaustive_size(channel_groups(m, ex), target),
                                     model_name=model_name, profiles=profiles, ui=ui)
    if priced is not None:
        return priced
    ui.log(f"measuring the latency table of {model_name} on {target.name}")
    return profile(m, ex, target, model_name=model_name, profiles=profiles, ui=ui, resume=resume).path


def resume_profile(path: str | Path, model: Any, target: Target | str, ui: UI | None = None, example: Any = None,
                   **kwargs: Any) -> Profile:
    """Finish the interrupted profile in ``path`` (what ``compress --resume`` calls instead of refusing).

    The model name, the example input's shape and the timing protocols are read from the file
    (``example`` overrides the stored shape, for files written before it was stored); only the
    signatures the file lacks are measured, then the per-model term. A file measured on another
    device is refused (:class:`~edgeprune.profile.device.ForeignProfile`). ``kwargs`` go to :func:`profile`.
    """
    from edgeprune.config import get_target
    from edgeprune.fileio import read_json

    path = Path(path)
    doc = read_json(path, "profile file")
    validate(doc, path)
    target = get_target(target)
    if doc["target"]["name"] != target.name:
        raise BadInput(f"{path} holds a profile for target {doc['target']['name']!r}, not {target.name!r}")
    if example is None:
        example = stored_example(path)
    if example is None and isinstance(model, str):
        from edgeprune.models import model_spec

        if model_spec(model) is None:
            raise BadInput(f"{path} does not store its example input's shape (written by an older edgeprune): "
                           f"resume it with `edgeprune profile --target {target.name} --model {model} --input-shape N,C,H,W`")
    protocols = doc.get("protocol") or {}
    kwargs.setdefault("protocol", _protocol_from(TimingProtocol, protocols.get("layer")))
    kwargs.setdefault("model_protocol", _protocol_from(ModelProtocol, protocols.get("model")))
    return profile(model, example, target, model_name=doc.get("model"), out=path, resume=True, ui=ui, **kwargs)


def _protocol_from(cls: Any, d: Mapping[str, Any] | None) -> Any:
    """A protocol dataclass from its stored dict (unknown keys dropped; None when nothing is stored)."""
    from dataclasses import fields

    if not isinstance(d, Mapping):
        return None
    names = {f.name for f in fields(cls)}
    try:
        return cls(**{k: v for k, v in d.items() if k in names})
    except (TypeError, ValueError):
        return None


def _calibrate(prof: Profile, model: Any, example: Any, graph: ChannelGraph, target: Target, backend: Any,
               mprotocol: ModelProtocol, n: int, seed: int, ui: UI,
               extra: Mapping[str, Mapping[str, int]] | None = None) -> tuple[dict[str, Timing], dict[str, list[float]]] | None:
    """Measure the dense model and ``n`` pruned configurations; fit the per-model term.

    ``extra`` configurations (the audit's) are measured in the same interleaved batch,
    so calibration and audit see the same machine conditions; their timings are
    returned (they take no part in the fit).
    """
    doc = prof.data
    dense_dtype = "fp32" if "fp32" in doc["precisions"] else doc["precisions"][0]
    dtypes = {name: dense_dtype for name in graph.layers}
    pred = prof.predictor()
    if backend.unit == "cycles":
        # simulated cycles are additive: the model is the sum of its layers, no correction
        sigs = graph.signatures({}, dtypes)
        total = pred.layer_sum(sigs)
        doc["dense_latency"] = Timing(total, total, total, 1, backend.unit).to_dict()
        doc["calibration"] = {"model": doc["model"], "dtype": dense_dtype, "coef": {"layers": 1.0, "offset": 0.0}, "points": [],
                              "method": "none: simulated cycles are additive"}
        return None
    rng = random.Random(seed)
    m = max(1, target.channel_multiple)
    configs: dict[str, dict[str, int]] = {"dense": {}}
    for i in range(n):
        configs[f"cal{i}-{'aligned' if i % 2 == 0 else 'unaligned'}"] = random_widths(graph, rng, i % 2 == 0, m)
    batch = dict(configs)
    for k, v in (extra or {}).items():
        batch.setdefault(k, v)
    # int8 whole models (dense + a few pruned ones) give the int8 term its own scale
    int8_names = ["dense", *[k for k in configs if k != "dense"][:INT8_CALIBRATION]] \
        if "int8" in doc["precisions"] and dense_dtype != "int8" and backend.int8_model_term else []
    ui.log(f"calibrating the per-model term on {len(configs)} whole models"
           + (f" and {len(int8_names)} int8 ones" if int8_names else "")
           + (f", measured interleaved with {len(batch) - len(configs)} audit models" if len(batch) > len(configs) else ""))
    with tempfile.TemporaryDirectory(prefix="edgeprune-calibration-") as d:
        engines = _export_engines(model, example, target, batch, int8_names, Path(d), ui)
        timings, per_pass = measure_engines(engines, target, mprotocol, ui,
                                            "whole models (calibration + audit)" if extra else "calibration (whole models)")
    rows = []
    for name, widths in configs.items():
        feats = pred.features(graph.signatures(widths, dtypes))
        rows.append({"name": name, "widths": widths, "features": feats, "layer_sum": feats["layers"],
                     "measured": timings[name].to_dict(), "passes": per_pass[name]})
    coef = fit_calibration([(r["features"], r["measured"]["median"]) for r in rows], backend.unit)
    rows8 = [{"name": name, "widths": configs[name], "measured": timings[f"{name}@int8"].to_dict(),
              "passes": per_pass[f"{name}@int8"]} for name in int8_names]
    if rows8:
        coef["int8_scale"] = fit_int8_scale(pred, graph, coef, rows8)
    doc["dense_latency"] = {**timings["dense"].to_dict(), "unit": backend.unit}
    doc["calibration"] = {
        "model": doc["model"], "dtype": dense_dtype, "coef": coef, "points": rows,
        "method": ("least squares on relative error: measured = sum(coef[f] * features[f]) + offset over the dense "
                   "model and random pruned configurations measured whole; features: layers (sum of layer costs), "
                   "unaligned_melems (activation elements of off-multiple conv layers, millions); a term is dropped "
                   "when the data cannot support it (see docs/profile.md)"),
        "test_retest_spread_median": _median([spread(per_pass[k]) for k in configs]),
        "measured_with_audit": bool(extra),
        "int8_points": rows8,
    }
    if rows8:
        doc["calibration"]["method"] += (
            "; int8_scale: the median over all-int8 whole models (dense + pruned, QDQ engines) of how much cheaper "
            "their int8 layers are than the isolated int8 tables say, applied to int8 layer costs in 'layers'")
    return timings, per_pass


#: pruned configurations measured as all-int8 whole models too (besides the dense one)
INT8_CALIBRATION = 3


def _export_engines(model: Any, example: Any, target: Target, configs: Mapping[str, Mapping[str, int] | nn.Module],
                    int8_names: Sequence[str], d: Path, ui: UI) -> dict[str, Any]:
    """fp32 ONNX files of ``configs`` (pruned widths of ``model``, or modules), plus ``NAME@int8`` QDQ
    engines of ``int8_names`` (random calibration: timing only)."""
    import warnings

    from edgeprune.compile.onnx_export import export_onnx
    from edgeprune.quant.ort_int8 import quantize_onnx

    engines: dict[str, Any] = {}
    with ui.progress("exporting models", total=len(configs) + len(int8_names)) as bar:
        for i, (name, cfg) in enumerate(configs.items()):
            m = cfg if hasattr(cfg, "forward") else (_pruned(model, example, cfg) if cfg else model)
            path = export_onnx(m, example, d / f"m{i}.onnx")
            engines[name] = path
            bar.advance()
            if name in int8_names:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # random calibration data is fine for timing
                    q = quantize_onnx(path, d / f"m{i}.int8.onnx", target, calib=None)
                engines[f"{name}@int8"] = (q.path, list(q.disabled_optimizers))
                bar.advance()
    return engines


def fit_int8_scale(pred: Predictor, graph: ChannelGraph, coef: Mapping[str, float], rows8: list[dict[str, Any]]) -> float:
    """The factor on int8 layer costs that makes ``coef`` predict the measured all-int8 models (median; in [0.2, 2]).

    ``pred`` must be uncalibrated for int8 (scale 1). Each row gets its raw
    features and the prediction with the fitted scale (in-sample error).
    """
    dtypes8 = {name: "int8" for name in graph.layers}
    a = float(coef.get("layers", 1.0))
    layers, rest = [], []  # each model's raw int8 layer sum, and the fitted line's other terms
    for r in rows8:
        f = pred.features(graph.signatures(r["widths"], dtypes8))
        r["features_int8_raw"] = f
        layers.append(f["layers"])
        rest.append(sum(float(v) * f[k] for k, v in coef.items() if k in f and k != "layers") + float(coef.get("offset", 0.0)))
    scales = [(r["measured"]["median"] - o) / max(a * x, 1e-12) for r, x, o in zip(rows8, layers, rest)]
    s8 = float(min(2.0, max(0.2, _median(scales) or 1.0)))
    for r, x, o in zip(rows8, layers, rest):
        pred_ms = a * x * s8 + o
        r["predicted"] = pred_ms
        r["error_in_sample"] = pred_ms / r["measured"]["median"] - 1.0
    return s8


def _median(xs: Sequence[float]) -> float | None:
    xs = sorted(xs)
    if not xs:
        return None
    k = len(xs)
    return float(xs[k // 2] if k % 2 else (xs[k // 2 - 1] + xs[k // 2]) / 2)


def audit_configs(graph: ChannelGraph, target: Target, n: int, seed: int = 1000) -> dict[str, dict[str, int]]:
    """The dense model plus ``n`` random pruned configurations, alternately aligned / unaligned."""
    rng = random.Random(seed)
    m = max(1, target.channel_multiple)
    configs: dict[str, dict[str, int]] = {"dense": {}}
    for i in range(n):
        aligned = i % 2 == 0
        configs[f"audit{i:03d}-{'aligned' if aligned else 'unaligned'}"] = random_widths(graph, rng, aligned, m)
    return configs


def run_audit(prof: Profile, model: Any, example: Any, target: Target | str, n: int,
              protocol: ModelProtocol | None = None, seed: int = 1000, ui: UI | None = None,
              graph: ChannelGraph | None = None,
              measured: tuple[dict[str, Timing], dict[str, list[float]]] | None = None) -> dict[str, Any]:
    """Sample ``n`` random pruned configurations (alternately aligned / unaligned), measure, compare.

    Returns the figures stored under ``"audit"``: median |error|, fractions within
    +-5% / +-10% (overall, aligned, unaligned), the test-retest spread of the
    measurement itself (odd against even interleaved passes), the error of ratios to
    the dense model (re-measured in the same batch), a MAC-count baseline for
    comparison, and every configuration's numbers. ``measured`` passes timings
    already taken (``profile`` measures the audit in its calibration batch).
    """
    from edgeprune.config import get_target
    from edgeprune.graph import channel_groups
    from edgeprune.ui import QUIET

    ui = ui or QUIET
    target = get_target(target)
    backend = _backend_for(target)
    protocol = protocol or ModelProtocol()
    graph = graph or channel_groups(model, example)
    pred = prof.predictor()
    dtype = (prof.data.get("calibration") or {}).get("dtype", "fp32")
    dtypes = {name: dtype for name in graph.layers}
    configs = audit_configs(graph, target, n, seed)
    if measured is not None:
        timings, per_pass = measured
    elif backend.unit == "cycles":
        timings = {k: _simulated_model(model, example, target, backend, w) for k, w in configs.items()}
        per_pass = {k: [t.median] for k, t in timings.items()}
    else:
        ui.log(f"auditing the predictor on {n} random pruned configurations (measured whole, interleaved)")
        timings, per_pass = measure_configs(model, example, target, configs, protocol, ui, "audit (whole models)")
    rows = []
    dense_pred = pred.model_cost(graph.signatures({}, dtypes))
    dense_meas = timings["dense"].median
    for name, widths in configs.items():
        if name == "dense":
            continue
        sigs = graph.signatures(widths, dtypes)
        p = pred.model_cost(sigs)
        meas = timings[name].median
        macs = sum(s.macs for s in sigs.values())
        rows.append({"name": name, "aligned": name.endswith("-aligned"), "widths": widths, "predicted": p, "measured": meas,
                     "error": p / meas - 1.0, "passes": per_pass[name], "spread": spread(per_pass[name]), "macs": macs,
                     "error_vs_dense": (p / dense_pred) / (meas / dense_meas) - 1.0})
    # MAC-count baseline: one line through the calibration points (what a FLOP-based planner assumes)
    mac_rows = []
    cal = prof.data.get("calibration") or {}
    cal_pts = [(sum(s.macs for s in graph.signatures(r["widths"], dtypes).values()), r["measured"]["median"]) for r in cal.get("points", [])]
    mac_fit = fit_calibration([({"layers": float(x)}, y) for x, y in cal_pts], backend.unit, ("layers",)) if len(cal_pts) >= 2 else None
    if mac_fit:
        mac_rows = [mac_fit["layers"] * r["macs"] + mac_fit["offset"] for r in rows]
    out = summarise_audit(rows, mac_rows, backend.unit, protocol)
    out["dense"] = {"predicted": dense_pred, "measured": timings["dense"].to_dict(), "passes": per_pass["dense"]}
    out["measured_with_calibration"] = measured is not None
    return out


def summarise_audit(rows: list[dict], mac_pred: list[float], unit: str, protocol: ModelProtocol) -> dict[str, Any]:
    """The audit figures from per-configuration rows."""

    def figs(sel: list[dict]) -> dict[str, Any]:
        errs = [abs(r["error"]) for r in sel]
        if not errs:
            return {"n": 0}
        return {
            "n": len(errs),
            "median_abs_error": _median(errs),
            "max_abs_error": max(errs),
            "within_5pct": sum(e <= 0.05 for e in errs) / len(errs),
            "within_10pct": sum(e <= 0.10 for e in errs) / len(errs),
            "mean_signed_error": sum(r["error"] for r in sel) / len(sel),
        }

    spreads = [r["spread"] for r in rows]
    rel = [abs(r["error_vs_dense"]) for r in rows if "error_vs_dense" in r]
    out: dict[str, Any] = {
        "n": len(rows),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "unit": unit,
        "loadavg": _loadavg(),
        "protocol": _protocol_dict(protocol),
        **figs(rows),
        "aligned": figs([r for r in rows if r["aligned"]]),
        "unaligned": figs([r for r in rows if not r["aligned"]]),
        "test_retest": {
            "what": "relative difference |median(odd passes) - median(even passes)| / median: two independent halves of the interleaved protocol on the same model",
            "median_spread": _median(spreads),
            "within_5pct": (sum(s <= 0.05 for s in spreads) / len(spreads)) if spreads else None,
            "within_10pct": (sum(s <= 0.10 for s in spreads) / len(spreads)) if spreads else None,
        },
        "configs": rows,
    }
    if rel:
        out["relative_to_dense"] = {
            "what": "error of predicted/predicted_dense against measured/measured_dense (the dense model is re-measured "
                    "in the same interleaved batch): what ratio budgets such as latency=0.6x depend on, immune to "
                    "machine-wide drift between calibration and audit",
            "median_abs_error": _median(rel),
            "within_5pct": sum(e <= 0.05 for e in rel) / len(rel),
            "within_10pct": sum(e <= 0.10 for e in rel) / len(rel),
        }
    if mac_pred:
        errs = [abs(p / r["measured"] - 1.0) for p, r in zip(mac_pred, rows)]
        out["macs_baseline"] = {
            "what": "one line measured = a * MACs + b through the calibration points",
            "median_abs_error": _median(errs),
            "within_5pct": sum(e <= 0.05 for e in errs) / len(errs),
            "within_10pct": sum(e <= 0.10 for e in errs) / len(errs),
        }
    return out


def refit(prof: Profile, graph: ChannelGraph) -> Profile:
    """Re-fit the per-model term from the stored calibration points and re-score the stored audit.

    Nothing is measured again: the calibration points and audit configurations keep
    their measured latencies, only the predictions change (after a predictor change).
    The audit configurations stay held out of the fit.
    """
    doc = prof.data
    cal = doc.get("calibration")
    if not cal or not cal.get("points"):
        return prof
    prof._predictor = None
    doc["calibration"]["coef"] = {}
    pred = prof.predictor()
    dtypes = {name: cal.get("dtype", "fp32") for name in graph.layers}
    for r in cal["points"]:
        r["features"] = pred.features(graph.signatures(r["widths"], dtypes))
        r["layer_sum"] = r["features"]["layers"]
    doc["calibration"]["coef"] = fit_calibration([(r["features"], r["measured"]["median"]) for r in cal["points"]], doc["unit"])
    if cal.get("int8_points"):
        doc["calibration"]["coef"]["int8_scale"] = fit_int8_scale(pred, graph, doc["calibration"]["coef"], cal["int8_points"])
    prof._predictor = None
    pred = prof.predictor()
    a = doc.get("audit")
    if a and a.get("configs"):
        dense_pred = pred.model_cost(graph.signatures({}, dtypes))
        dense_meas = a["dense"]["measured"]["median"]
        for r in a["configs"]:
            p = pred.model_cost(graph.signatures(r["widths"], dtypes))
            r["predicted"] = p
            r["error"] = p / r["measured"] - 1.0
            r["error_vs_dense"] = (p / dense_pred) / (r["measured"] / dense_meas) - 1.0
        a["dense"]["predicted"] = dense_pred
        cal_pts = [(sum(s.macs for s in graph.signatures(r["widths"], dtypes).values()), r["measured"]["median"]) for r in cal["points"]]
        mac_fit = fit_calibration([({"layers": float(x)}, y) for x, y in cal_pts], doc["unit"], ("layers",))
        mac_rows = [mac_fit["layers"] * r["macs"] + mac_fit["offset"] for r in a["configs"]]
        keep = {k: a[k] for k in ("date", "loadavg", "protocol", "dense", "measured_with_calibration") if k in a}
        new = summarise_audit(a["configs"], mac_rows, doc["unit"], ModelProtocol(**a["protocol"]))
        new.update(keep)
        doc["audit"] = new
    return prof
