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
    ui: UI | None = None,
) -> Profile:
    """Fit the per-model term of ``model`` on ``target`` over ``device_model``; optionally audit; save the profile."""
    from edgeprune.config import get_target
    from edgeprune.graph import channel_groups
    from edgeprune.profile.lut import Profile, default_profile_path
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
    out = Path(out) if out else default_profile_path(target.name, model_name, profiles)
    t0 = time.perf_counter()
    graph = channel_groups(model, example)
    precisions, skip = _supported_precisions(target, backend)
    doc = _new_doc(target, backend, model_name, {}, LAYER_PROTOCOL, mprotocol)
    doc["grid"] = {"policy": "none: layer costs come from the device model (cost_model)", "groups": {}}
    doc["precisions"] = [p for p in precisions if device_model.regressor("conv1x1", p) is not None] or precisions
    doc["notes"] = [*skip, *notes]
    doc["machine"]["loadavg_start"] = _loadavg()
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
