"""Tiny models and data for fast tests (importable as ``tests.tiny``)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class TinyNet(nn.Module):
    """A small residual CNN with the patterns that matter: conv-BN-ReLU, a residual add, a classifier."""

    def __init__(self, width: int = 32, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.conv4 = nn.Conv2d(width, 2 * width, 3, 2, 1, bias=False)
        self.bn4 = nn.BatchNorm2d(2 * width)
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(x)))
        x = F.relu(x + self.bn3(self.conv3(y)))
        x = F.relu(self.bn4(self.conv4(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def tiny_net() -> nn.Module:
    """Factory for ``--model tests.tiny:tiny_net``: deterministic random weights, BN stats set."""
    torch.manual_seed(0)
    m = TinyNet()
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_var.uniform_(0.5, 1.5)
            mod.running_mean.uniform_(-0.1, 0.1)
    return m.eval()


def tiny_npz(path, n: int = 300, size: int = 16, classes: int = 10, seed: int = 0) -> str:
    """Write a learnable synthetic image set (class = which colour channel and quadrant is bright)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.integers(0, 60, (n, size, size, 3)).astype(np.uint8)
    for i, c in enumerate(y):
        q = c % 4
        r0, c0 = (q // 2) * size // 2, (q % 2) * size // 2
        x[i, r0 : r0 + size // 2, c0 : c0 + size // 2, c % 3] += 150
    np.savez(path, images=x, labels=y)
    return str(path)
