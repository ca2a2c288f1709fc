"""Models by name from torchvision and timm (``--model torchvision:NAME``, ``--model timm:NAME``), imported lazily,
and EfficientNet-Lite with its packaged ImageNet weights (``--model efficientnet-lite:lite0``, models/efficientnet_lite.py).

All are optional: edgeprune never needs them, and never downloads weights (``weights=None`` /
``pretrained=False`` always for torchvision and timm; pass a state_dict with ``--weights FILE``).
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Mapping
from typing import Any

from torch import nn

from edgeprune.errors import BadInput, close_names, first_line

HUBS = ("torchvision", "timm", "efficientnet-lite")
# arguments that would make a hub download weights: edgeprune takes a local state_dict (--weights) instead
_DOWNLOADING_ARGS = ("weights", "pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path")


def import_torchvision() -> Any:
    """The ``torchvision`` module, importable on a CPU-only torch.

    torchvision's only 0.28 wheel is a CUDA build whose C++ extension does not load on the CPU torch; its
    fake-kernel registrations then fail with "operator torchvision::nms does not exist". Its model definitions
    are pure Python, so when the plain import fails that way the two ops it registers kernels for are declared
    first (no kernel: detection ops stay unusable, classification models work) and the import is retried.
    A torchvision whose extension loads is imported untouched. Benchmarks and tests use this too.
    """
    if importlib.util.find_spec("torchvision") is None:
        raise BadInput("--model torchvision:NAME needs torchvision, which is not installed (pip install torchvision)")
    try:
        import torchvision

        return torchvision
    except Exception as err:  # noqa: BLE001 - a wheel built for another torch fails in many ways
        if "torchvision::" not in str(err):
            raise BadInput(f"torchvision does not import here: {first_line(err)}") from None
    for mod in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[mod]  # the failed import left half-initialised modules behind
    import torch

    for op in ("nms", "qnms"):
        try:
            torch.library.define(f"torchvision::{op}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        except RuntimeError:
            pass  # already declared (an earlier call)
    try:
        import torchvision
    except Exception as err:  # noqa: BLE001 - see above
        raise BadInput(f"torchvision does not import here: {first_line(err)}") from None
    return torchvision


def _check_args(spec: str, args: Mapping[str, Any]) -> None:
    bad = [k for k in args if k in _DOWNLOADING_ARGS]
    if bad:
        raise BadInput(f"{spec}: --model-arg {bad[0]} would download weights; edgeprune never downloads: "
                       "pass a local state_dict with --weights FILE")


def _build(spec: str, fn: Any, args: Mapping[str, Any], **fixed: Any) -> nn.Module:
    try:
        model = fn(**fixed, **args)
    except TypeError as err:
        raise BadInput(f"{spec} does not take these --model-arg values: {first_line(err)}") from None
    if not isinstance(model, nn.Module):  # pragma: no cover - both hubs build modules
        raise BadInput(f"{spec} built a {type(model).__name__}, not an nn.Module")
    return model


def torchvision_model(name: str, args: Mapping[str, Any] | None = None) -> nn.Module:
    """``torchvision.models.get_model(name, weights=None, **args)``; an unknown name lists close ones."""
    args = dict(args or {})
    spec = f"torchvision:{name}"
    _check_args(spec, args)
    tv = import_torchvision()
    names = tv.models.list_models()
    if name not in names:
        raise BadInput(f"unknown torchvision model {name!r}{close_names(name, names)}")
    return _build(spec, tv.models.get_model, args, name=name, weights=None)


def timm_model(name: str, args: Mapping[str, Any] | None = None) -> nn.Module:
    """``timm.create_model(name, pretrained=False, **args)``; an unknown name lists close ones."""
    args = dict(args or {})
    spec = f"timm:{name}"
    _check_args(spec, args)
    if importlib.util.find_spec("timm") is None:
        raise BadInput("--model timm:NAME needs timm, which is not installed (pip install timm)")
    timm = importlib.import_module("timm")
    if not timm.is_model(name):
        raise BadInput(f"unknown timm model {name!r}{close_names(name, timm.list_models())}")
    return _build(spec, timm.create_model, args, model_name=name, pretrained=False)


def hub_model(spec: str, args: Mapping[str, Any] | None = None) -> nn.Module | None:
    """The model for ``torchvision:NAME``, ``timm:NAME`` or ``efficientnet-lite:NAME``; None when ``spec`` names no hub."""
    hub, sep, name = spec.partition(":")
    if not sep or hub not in HUBS:
        return None
    if not name:
        raise BadInput(f"--model {spec!r}: give a model name after '{hub}:' (e.g. {hub}:{'lite0' if hub == 'efficientnet-lite' else 'resnet18'})")
    if hub == "efficientnet-lite":
        from edgeprune.models.efficientnet_lite import efficientnet_lite_model

        return efficientnet_lite_model(name, args)
    return torchvision_model(name, args) if hub == "torchvision" else timm_model(name, args)


__all__ = ["HUBS", "hub_model", "import_torchvision", "timm_model", "torchvision_model"]
