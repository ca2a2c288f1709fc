"""TF-style "SAME" padding (issue #24): zero padding outside the conv is priced as the conv's own padding."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgeprune.graph import channel_groups


class Conv2dSame(nn.Conv2d):
    """timm's Conv2dSame: TF "SAME" padding done with ``F.pad`` inside the conv's forward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.kernel_size
        sh, sw = self.stride
        ph = max((-(-ih // sh) - 1) * sh + kh - ih, 0)
        pw = max((-(-iw // sw) - 1) * sw + kw - iw, 0)
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class LiteNet(nn.Module):
    """EfficientNet-Lite style: a separate ZeroPad2d module, a functional pad and a SAME conv, each before a conv + BN."""

    def __init__(self) -> None:
        super().__init__()
        self.pad = nn.ZeroPad2d((0, 1, 0, 1))  # stride-2 3x3 "SAME" on an even size: right/bottom only
        self.stem = nn.Conv2d(3, 16, 3, stride=2)
        self.bn0 = nn.BatchNorm2d(16)
        self.dw = nn.Conv2d(16, 16, 5, groups=16)
        self.bn1 = nn.BatchNorm2d(16)
        self.same = Conv2dSame(16, 24, 3, stride=2)
        self.bn2 = nn.BatchNorm2d(24)
        self.ref = nn.Conv2d(24, 24, 3, padding=1)  # ordinary padding, for comparison
        self.bn3 = nn.BatchNorm2d(24)
        self.fc = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn0(self.stem(self.pad(x))))
        x = F.relu(self.bn1(self.dw(F.pad(x, (2, 2, 2, 2)))))
        x = F.relu(self.bn2(self.same(x)))
        x = F.relu(self.bn3(self.ref(x)))
        return self.fc(x.mean((2, 3)))


def test_same_padding_is_recorded_with_the_fused_bn():
    net = LiteNet().eval()
    x = torch.randn(1, 3, 32, 32)
    graph = channel_groups(net, x)
    sig = {n: graph.layers[n].signature for n in ("stem", "dw", "same", "ref")}
    assert (sig["stem"].padding, sig["stem"].in_hw, sig["stem"].out_hw) == ((1, 1), (32, 32), (16, 16))
    assert (sig["dw"].padding, sig["dw"].in_hw, sig["dw"].out_hw) == ((2, 2), (16, 16), (16, 16))
    assert (sig["same"].padding, sig["same"].in_hw, sig["same"].out_hw) == ((1, 1), (16, 16), (8, 8))
    assert sig["ref"].padding == (1, 1) and sig["ref"].in_hw == (8, 8)
    for n in ("stem", "dw", "same", "ref"):
        assert sig[n].post == "bn+relu", (n, sig[n].post)  # the BN after each conv is fused, as for a padded conv
    # priced like the same conv with its padding built in: one LUT key shape
    plain = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.Flatten(), nn.LazyLinear(10))
    plain(x)
    twin = channel_groups(plain.eval(), x).layers["0"].signature
    assert twin.shape_key() == sig["stem"].shape_key() and twin.macs == sig["stem"].macs
