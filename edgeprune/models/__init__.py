"""Model registry, the embedded CIFAR ResNets and :func:`load_model` for user models."""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from edgeprune.errors import BadInput, first_line
from edgeprune.models.cifar_resnet import CifarResNet, SelectShortcut
from edgeprune.models.user import load_model, load_weights, parse_model_args
from edgeprune.registry import Registry

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


@dataclass(frozen=True)
class ModelSpec:
    """What a registered model needs besides its weights: the input it expects."""

    input_shape: tuple[int, ...]
    dataset: str | None = None


MODELS: Registry[Callable[[bool], nn.Module]] = Registry("model")

_CIFAR_CHECKPOINTS = {
    20: "resnet20-12fca82f.th",
    32: "resnet32-d509ac18.th",
    44: "resnet44-014dd654.th",
    56: "resnet56-4bfd9763.th",
}


def load_cifar_checkpoint(model: CifarResNet, path: str | os.PathLike[str]) -> CifarResNet:
    """Load a pytorch_resnet_cifar10 checkpoint (``{"state_dict": {"module.*": ...}}``) into ``model``."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise BadInput(f"checkpoint not found: {path}") from None
    except Exception as err:  # noqa: BLE001 - truncated or foreign file: torch raises many kinds
        raise BadInput(f"cannot read checkpoint {path}: {first_line(err)}") from None
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise BadInput(f"checkpoint {path} holds no state_dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    # option-A checkpoints have no shortcut tensors: the fixed selection matrices come from the model
    for key, value in model.state_dict().items():
        if key.endswith("shortcut.weight"):
            state.setdefault(key, value)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise BadInput(f"checkpoint {path} does not fit {type(model).__name__}: {_mismatch(err)}") from None
    return model


def _mismatch(err: Exception) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return lines[1] if len(lines) > 1 else first_line(err)


def _register_cifar(depth: int) -> None:
    n = (depth - 2) // 6

    @MODELS.register(
        f"resnet{depth}-cifar10",
        f"CIFAR-10 ResNet-{depth} (option-A shortcuts), pretrained weights embedded",
        spec=ModelSpec((1, 3, 32, 32), "cifar10"),
    )
    def build(pretrained: bool = True) -> nn.Module:
        model = CifarResNet(n)
        if pretrained:
            load_cifar_checkpoint(model, WEIGHTS_DIR / _CIFAR_CHECKPOINTS[depth])
        return model.eval()


for _depth in _CIFAR_CHECKPOINTS:
    _register_cifar(_depth)


def model_spec(name: str) -> ModelSpec | None:
    """The input spec of a registered model, or None for a user model."""
    return MODELS.entry(name).meta.get("spec") if name in MODELS else None


__all__ = ["MODELS", "CifarResNet", "ModelSpec", "SelectShortcut", "load_cifar_checkpoint", "load_model", "load_weights",
           "model_spec", "parse_model_args"]
