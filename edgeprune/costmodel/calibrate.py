"""Per-model calibration on top of a device model: a few whole-model measurements, no layer tables.

``calibrate_model`` writes a profile (schema ``edgeprune.profile``, saved where today's
profiles are: :func:`~edgeprune.profile.lut.default_profile_path`) whose ``records`` are
empty and whose ``cost_model`` embeds the device model; :meth:`Profile.predictor` then
returns a :class:`~edgeprune.costmodel.predictor.DevicePredictor`. The per-model term
(scale, unaligned term, offset, int8 scale) is fitted by the profiler's own
calibration (:func:`edgeprune.profile.profiler._calibrate`), and ``audit`` reuses
:func:`edgeprune.profile.profiler.run_audit`.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeprune.costmodel.model import DeviceModel
from edgeprune.costmodel.predictor import DevicePredictor

if TYPE_CHECKING:
    from edgeprune.config import Target
    from edgeprune.profile.lut import Profile
    from edgeprune.profile.timing import ModelProtocol
    from edgeprune.ui import UI


def calibrate_model(
    model: Any,
    example: Any,
    target: Target | str,
    device_model: DeviceModel,
    *,
    model_name: str | None = None,
    out: str | Path | None = None,
    profiles: str | Path | None = None,
    calibration: int = 6,
    audit: int = 0,
    seed: int = 0,
    model_protocol: ModelProtocol | None = None,
    notes: tuple[str, ...] = (),
    anchors: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25),
    ui: UI | None = None,
) -> Profile:
    """Fit the per-model term of ``model`` on ``target`` over ``device_model``; optionally audit; save the profile.

    ``anchors``: width fractions at which each distinct fp32 layer shape of the model is measured alone
    (:func:`measure_anchors`, a second or two per model) and added to the embedded copy of the device
    model, so the model's own shapes are exact there and steer their predictions; ``()`` measures none.
    """
    from edgeprune.config import get_target
    from edgeprune.graph import channel_groups
    from edgeprune.profile.lut import Profile, default_profile_path, profile_input_size
    from edgeprune.profile.profiler import (
        LAYER_PROTOCOL,
        _backend_for,
        _calibrate,
        _example_for,
        _loadavg,
        _model_and_name,
        _new_doc,
        _supported_precisions,
        audit_configs,
        run_audit,
    )
    from edgeprune.profile.timing import ModelProtocol
    from edgeprune.ui import QUIET

    ui = ui or QUIET
    target = get_target(target)
    backend = _backend_for(target)
    model, model_name = _model_and_name(model, model_name)
    example = _example_for(model_name, example)
    mprotocol = model_protocol or ModelProtocol()
    out = Path(out) if out else default_profile_path(target.name, model_name, profiles, profile_input_size(example))
    t0 = time.perf_counter()
    graph = channel_groups(model, example)
    precisions, skip = _supported_precisions(target, backend)
    doc = _new_doc(target, backend, model_name, {}, LAYER_PROTOCOL, mprotocol)
    doc["grid"] = {"policy": "none: layer costs come from the device model (cost_model)", "groups": {}}
    doc["precisions"] = [p for p in precisions if device_model.regressor("conv1x1", p) is not None] or precisions
    doc["notes"] = [*skip, *notes]
    doc["machine"]["loadavg_start"] = _loadavg()
    if anchors and backend.unit != "cycles":
        device_model = measure_anchors(device_model, graph, target, backend, anchors, ui)
    doc["cost_model"] = device_model.data
    doc["cost_model_source"] = str(device_model.path) if device_model.path else None
    prof = Profile(doc, out)
    prof._predictor = DevicePredictor(device_model)
    extra = audit_configs(graph, target, audit, seed + 1000) if audit and backend.unit != "cycles" else None
    t_cal = time.perf_counter()
    measured = _calibrate(prof, model, example, graph, target, backend, mprotocol, calibration, seed, ui, extra)
    doc["timings_s"]["calibration+audit" if extra else "calibration"] = round(time.perf_counter() - t_cal, 2)
    prof._predictor = None
    if extra:
        t_aud = time.perf_counter()
        doc["audit"] = run_audit(prof, model, example, target, audit, mprotocol, seed=seed + 1000, ui=ui, graph=graph,
                                 measured=measured)
        doc["timings_s"]["audit"] = round(time.perf_counter() - t_aud, 2)
    doc["machine"]["loadavg_end"] = _loadavg()
    doc["timings_s"]["total_this_run"] = round(time.perf_counter() - t0, 2)
    doc["complete"] = True
    prof.save(out)
    prof._predictor = None
    return prof


def measure_anchors(device_model: DeviceModel, graph: Any, target: Target, backend: Any, fractions: tuple[float, ...],
                    ui: UI) -> DeviceModel:
    """A copy of ``device_model`` plus each distinct fp32 layer shape of ``graph`` measured at ``fractions`` of its
    channels (rounded to the target multiple), samples marked ``"source": "model"``."""
    import copy

    from edgeprune.costmodel.measure import kernel_protocol
    from edgeprune.costmodel.space import split_kernels

    data = copy.deepcopy(device_model.data)
    m = max(1, target.channel_multiple)
    todo = {}
    for info in graph.layers.values():
        s = info.signature.with_channels(info.signature.in_channels, info.signature.out_channels, "fp32")
        for f in fractions:
            ci, co = _width(s.in_channels, f, m), _width(s.out_channels, f, m)
            pairs = [(ci, co)]
            if f < 1 and m > 1:  # and the unaligned neighbour (the other alignment class), as the profiler's 8k-1 probes
                pairs.append((max(1, ci - 1) if ci > m else ci, max(1, co - 1) if co > m else co))
            for a, b in pairs:
                if s.groups == -1:
                    b = a
                elif s.groups > 1 and (a % s.groups or b % s.groups):
                    continue  # a grouped conv runs only with both widths divisible by its groups
                for k in split_kernels(s.with_channels(a, b), data["target"].get("backend", "")):
                    if k.key() not in data["samples"]:
                        todo[k.key()] = k
    protocol = kernel_protocol()
    with ui.progress("model layer anchors", total=len(todo)) as bar:
        for key, sig in todo.items():
            timing, _meta = backend.time_layer_detail(sig, target, protocol)
            data["samples"][key] = {"signature": sig.to_dict(), **timing.to_dict(), "source": "model"}
            bar.advance()
    data.setdefault("notes", []).append(f"{len(todo)} layer anchors of the model added by calibrate_model")
    return DeviceModel(data, device_model.path)


def _width(c: int, fraction: float, multiple: int) -> int:
    """``fraction`` of ``c`` channels rounded up to ``multiple`` (``c`` itself at 1)."""
    import math

    return c if fraction >= 1 else max(1, min(c, math.ceil(c * fraction / multiple) * multiple))


def price_with_device_model(model: Any, example: Any, target: Target | str, *, configurations: int,
                            model_name: str | None = None, profiles: str | Path | None = None,
                            ui: UI | None = None) -> Path | None:
    """The profile of ``model`` priced by ``target``'s device cost model, or None when the exhaustive table is the
    better way (the caller measures it).

    ``configurations``: the size of the model's exhaustive table. Up to ``EXACT_PREFERRED`` it is measured
    (a minute or two, and exact: ResNet-56 on the EPYC, 29 of 30 audited configurations within 5% against 24 of
    30 for the device model). Above, a stored device model prices it; with none, one is built now (once per
    device) when the table exceeds ``EXHAUSTIVE_LIMIT`` on a local target. What ``compress``,
    :func:`~edgeprune.profile.local_profile` and ``edgeprune profile --model`` share.
    """
    from edgeprune.config import get_target
    from edgeprune.costmodel.measure import BuildConfig, build_device_model
    from edgeprune.costmodel.model import find_device_model, load_device_model
    from edgeprune.profile.profiler import EXACT_PREFERRED, EXHAUSTIVE_LIMIT, SECONDS_PER_CONFIG
    from edgeprune.ui import QUIET

    ui, target = ui or QUIET, get_target(target)
    if configurations <= EXACT_PREFERRED:
        return None
    dm_path = find_device_model(target, profiles)
    if dm_path is None:
        if configurations <= EXHAUSTIVE_LIMIT or target.host != "local":
            return None
        cfg = BuildConfig()
        ui.log(f"{model_name or 'the model'} has {configurations:,} layer configurations (about "
               f"{configurations * SECONDS_PER_CONFIG / 60:.0f} min to measure exhaustively): building the device cost "
               f"model of {target.name} once instead (at most {cfg.budget_s / 60:.0f} min; every later model reuses it; "
               f"`edgeprune profile --target {target.name}` builds it ahead)")
        dm_path = build_device_model(target, profiles=profiles, config=cfg, ui=ui).path
    ui.log(f"pricing {model_name or 'the model'} with the device cost model {dm_path} (calibrating the per-model term) ...")
    dm = load_device_model(dm_path, target=target)
    return calibrate_model(model, example, target, dm, model_name=model_name, profiles=profiles, ui=ui).path
