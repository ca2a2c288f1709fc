"""Latency profiling: look-up tables (LUT files in the user cache, see ``find_profile``) and the predictor; backends are :mod:`edgeprune.backends`.

    prof = profile(model, example, "cpu-ort")            # measure (resumable), calibrate, write the file
    prof = load_profile(find_profile("cpu-ort", "resnet56-cifar10", input_size=(32, 32)), target="cpu-ort")
    pred = prof.predictor()
    pred.layer_cost(sig); pred.model_cost(graph.signatures(widths))
    measure_model(pruned, example, "cpu-ort")            # whole model, the repeatable protocol

Heavy packages (onnxruntime, torch) are imported inside the functions that need them.
"""
from __future__ import annotations

from edgeprune.profile.device import ForeignProfile, check_device, stored_fingerprint
from edgeprune.profile.lut import (
    SCHEMA,
    SCHEMA_VERSION,
    Predictor,
    Profile,
    default_profile_path,
    find_profile,
    is_legacy_profile,
    load_profile,
    model_profiles,
    profile_input_size,
    profile_model_name,
    unpriced_layers,
)
from edgeprune.profile.profiler import (
    LAYER_PROTOCOL,
    aligned_grid,
    audit_configs,
    layer_points,
    local_profile,
    make_grid,
    measure_configs,
    measure_engines,
    measure_model,
    profile,
    random_widths,
    refit,
    resume_profile,
    run_audit,
    stored_example,
    unaligned_grid,
)
from edgeprune.profile.timing import (
    ModelProtocol,
    Timing,
    TimingProtocol,
    interleaved,
    interleaved_rounds,
    measure,
)

__all__ = [
    "LAYER_PROTOCOL",
    "SCHEMA",
    "SCHEMA_VERSION",
    "ForeignProfile",
    "ModelProtocol",
    "Predictor",
    "Profile",
    "Timing",
    "TimingProtocol",
    "aligned_grid",
    "audit_configs",
    "check_device",
    "default_profile_path",
    "find_profile",
    "interleaved",
    "interleaved_rounds",
    "is_legacy_profile",
    "layer_points",
    "load_profile",
    "local_profile",
    "make_grid",
    "measure",
    "measure_configs",
    "measure_engines",
    "measure_model",
    "model_profiles",
    "profile",
    "profile_input_size",
    "profile_model_name",
    "random_widths",
    "refit",
    "resume_profile",
    "run_audit",
    "stored_example",
    "stored_fingerprint",
    "unaligned_grid",
    "unpriced_layers",
]
