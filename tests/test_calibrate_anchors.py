"""calibrate_model's layer anchors: a grouped conv is only measured at widths its groups divide (regnet_x_400mf at
224 px failed in ORT: 'Input channels C is not equal to kernel channels * group. C: 23 ... group: 2')."""
from __future__ import annotations

import torch
from torch import nn

from edgeprune.config import get_target
from edgeprune.costmodel.calibrate import measure_anchors
from edgeprune.costmodel.model import DeviceModel
from edgeprune.graph import channel_groups
from edgeprune.profile.timing import Timing
from edgeprune.ui import QUIET


class _Recorder:
    """A backend that times nothing and records each layer signature it is asked for."""

    def __init__(self) -> None:
        self.asked = []

    def time_layer_detail(self, sig, target, protocol):
        self.asked.append(sig)
        return Timing(1.0, 1.0, 1.0, 1, "ms"), {}


def test_anchors_of_a_grouped_conv_keep_widths_its_groups_divide():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 24, 3, padding=1), nn.BatchNorm2d(24), nn.ReLU(),
                          nn.Conv2d(24, 24, 3, padding=1, groups=2), nn.BatchNorm2d(24), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 10)).eval()
    graph = channel_groups(model, torch.zeros(1, 3, 16, 16))
    target = get_target("cpu-ort")
    assert target.channel_multiple > 1  # so the unaligned neighbours (width - 1) are asked for
    backend = _Recorder()
    dm = DeviceModel({"samples": {}, "target": {"backend": "ort"}}, None)
    measure_anchors(dm, graph, target, backend, (1.0, 0.5), QUIET)
    grouped = [s for s in backend.asked if s.groups not in (1, -1)]
    assert grouped, "the grouped conv was not anchored at all"
    assert all(s.in_channels % s.groups == 0 and s.out_channels % s.groups == 0 for s in grouped), \
        [(s.in_channels, s.out_channels, s.groups) for s in grouped]
    assert any(s.in_channels % target.channel_multiple for s in backend.asked if s.groups == 1), \
        "unaligned neighbours of plain convs are still measured"
