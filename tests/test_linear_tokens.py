"""A Linear over positions (ConvNeXt's and Swin's channels-last MLPs, ViT's tokens) is priced by its positions: its
signature counts them, its MACs and its isolated-layer graph include them, and the device model prices it as the
1x1 convolution it computes. Before, every Linear was priced as a classifier on one row (ConvNeXt-T: 8 ms of
layers for a 100 ms model, so no pruning plan could reach a 0.6x budget)."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from edgeprune.costmodel.space import features, kernel_type
from edgeprune.graph import channel_groups
from edgeprune.graph.analyse import linear_tokens
from edgeprune.graph.signature import LayerSignature
from edgeprune.profile.layer_onnx import layer_onnx


class ChannelsLastMLP(nn.Module):
    """conv stem -> (B, H, W, C) -> Linear -> GELU -> Linear -> back to NCHW -> pool -> classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.fc1, self.act, self.fc2 = nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 16)
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x).permute(0, 2, 3, 1)
        y = self.fc2(self.act(self.fc1(y))).permute(0, 3, 1, 2)
        return self.head(y.mean((2, 3)))


def test_linear_tokens_of_each_input_rank() -> None:
    assert linear_tokens((1, 16)) == (1, 1)
    assert linear_tokens((1, 197, 768)) == (197, 1)
    assert linear_tokens((1, 56, 56, 96)) == (56, 56)
    assert linear_tokens((1, 4, 7, 7, 32)) == (28, 7)


def test_channels_last_linear_signatures_count_their_positions() -> None:
    graph = channel_groups(ChannelsLastMLP().eval(), torch.randn(1, 3, 8, 8))
    fc1, head = graph.layers["fc1"].signature, graph.layers["head"].signature
    assert fc1.in_hw == (8, 8) and fc1.out_hw == (8, 8) and fc1.macs == 64 * 16 * 32
    assert head.in_hw == (1, 1) and head.macs == 16 * 5  # a classifier keeps its one-row key
    assert kernel_type(fc1) == "conv1x1" and kernel_type(head) == "linear"
    conv = LayerSignature("conv2d", 16, 32, in_hw=(8, 8))
    assert features(fc1, 8) == features(conv, 8)  # priced as the 1x1 conv it computes


def test_the_isolated_layer_graph_of_a_token_linear_runs_with_its_positions() -> None:
    sig = LayerSignature("linear", 16, 32, in_hw=(8, 8), post="relu")
    sess = ort.InferenceSession(layer_onnx(sig).SerializeToString(), providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()[:1]
    assert list(inp.shape) == [1, 64, 16]
    out = sess.run(None, {inp.name: np.random.default_rng(0).standard_normal((1, 64, 16)).astype(np.float32)})[0]
    assert out.shape == (1, 64, 32) and (out >= 0).all()
