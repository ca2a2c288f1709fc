"""Model factories with arguments, for the ``--model pkg.mod:fn --model-arg k=v`` tests (``tests.factories``)."""
from __future__ import annotations

import torch
from torch import nn


def small_cnn(width: int = 8, classes: int = 10, bias: bool = True) -> nn.Module:
    """A conv-BN-ReLU x2 classifier of ``width`` channels; deterministic weights."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, classes, bias=bias),
    ).eval()
