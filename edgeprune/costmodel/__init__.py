"""The per-device cost model: profile a target once, price any model (docs/costmodel.md).

    dm = build_device_model("cpu-ort")                       # sampled kernels, fitted per kernel type (resumable)
    dm = load_device_model(find_device_model("cpu-ort"), target="cpu-ort")   # refuses another device's file
    pred = DevicePredictor(dm)                               # layer_cost / model_cost like profile.Predictor
    prof = calibrate_model(model, example, "cpu-ort", dm)    # a few whole models: the per-model term

Modules: ``space`` (kernel types, fusion rules, features, sampler), ``fit`` (regressors),
``measure`` (the adaptive, resumable build), ``model`` (the file), ``predictor``, ``calibrate``.
scikit-learn is imported only when a regressor is fitted.
"""
from __future__ import annotations

from edgeprune.costmodel.calibrate import calibrate_model
from edgeprune.costmodel.fit import FitConfig, KernelRegressor, cv_error
from edgeprune.costmodel.measure import BuildConfig, build_device_model
from edgeprune.costmodel.model import (
    SCHEMA,
    SCHEMA_VERSION,
    DeviceModel,
    device_model_path,
    find_device_model,
    load_device_model,
)
from edgeprune.costmodel.predictor import DevicePredictor
from edgeprune.costmodel.space import FUSION_RULES, KERNEL_TYPES, SpaceConfig, kernel_type, split_kernels

__all__ = [
    "FUSION_RULES",
    "KERNEL_TYPES",
    "SCHEMA",
    "SCHEMA_VERSION",
    "BuildConfig",
    "DeviceModel",
    "DevicePredictor",
    "FitConfig",
    "KernelRegressor",
    "SpaceConfig",
    "build_device_model",
    "calibrate_model",
    "cv_error",
    "device_model_path",
    "find_device_model",
    "kernel_type",
    "load_device_model",
    "split_kernels",
]
