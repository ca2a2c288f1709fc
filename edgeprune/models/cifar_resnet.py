"""CIFAR-10 ResNet-20/32/44/56 (He et al. 2016), option-A shortcuts.

Layer names match the widely used "pytorch_resnet_cifar10" checkpoints
(``conv1, bn1, layer1..3, linear``) so they load unchanged.

The option-A shortcut (``x[:, :, ::2, ::2]`` zero-padded with ``planes // 4``
channels each side) is written here as the exactly equivalent fixed 1x1
stride-2 convolution with a 0/1 selection matrix (:class:`SelectShortcut`).
That makes the channel coupling explicit, so the residual stages stay separate
channel groups that can be pruned independently, and ONNX Runtime fuses it
better than slice + pad (DESIGN.md).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgeprune.graph.custom_layers import register_layer


class SelectShortcut(nn.Module):
    """Fixed channel selection + spatial subsampling: ``y[:, i] = x[:, src[i], ::s, ::s]`` (or 0).

    ``weight`` is an (out, in) 0/1 buffer, not a parameter: training never changes it,
    and pruning slices its rows and columns like a 1x1 conv.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 2, offset: int | None = None) -> None:
        super().__init__()
        if offset is None:
            offset = (out_channels - in_channels) // 2
        sel = torch.zeros(out_channels, in_channels)
        for i in range(in_channels):
            if 0 <= i + offset < out_channels:
                sel[i + offset, i] = 1.0
        self.stride = stride
        self.register_buffer("weight", sel)

    @property
    def in_channels(self) -> int:
        """Input channel count."""
        return self.weight.shape[1]

    @property
    def out_channels(self) -> int:
        """Output channel count."""
        return self.weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight[:, :, None, None], stride=self.stride)


def _prune_select(layer: SelectShortcut, out_keep: torch.Tensor | None, in_keep: torch.Tensor | None) -> None:
    """Rows of the 0/1 selection matrix follow the output channels, columns the input channels."""
    w = layer.weight
    if out_keep is not None:
        w = w[out_keep]
    if in_keep is not None:
        w = w[:, in_keep]
    layer._buffers["weight"] = w.contiguous()


# traced like a 1x1 conv and sliced by _prune_select (members of kind "select")
register_layer(SelectShortcut, prune_fn=_prune_select, kind="select")


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual connection."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = SelectShortcut(in_planes, planes, stride, offset=planes // 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs: three stages of n blocks, 16/32/64 channels."""

    def __init__(self, n: int, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        in_planes = width
        stages = []
        for i, planes in enumerate((width, 2 * width, 4 * width)):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock(in_planes, planes, stride))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)
