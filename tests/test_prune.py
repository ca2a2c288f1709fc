"""Physical pruning of the embedded CIFAR ResNets (option-A shortcuts as SelectShortcut) and the error paths."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from edgeprune.errors import BadInput
from edgeprune.graph import channel_groups
from edgeprune.models import load_model
from edgeprune.prune import prune
from edgeprune.prune.granularity import allowed_counts, round_channels


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test here runs with one torch thread (tests/conftest.py one_torch_thread)."""


X = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _random_keep(graph, frac=0.3, multiple=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    keep = {}
    for g in graph.prunable:
        k = round_channels(g.size * (1 - frac), multiple, g.size)
        keep[g.id] = torch.randperm(g.size, generator=gen)[:k].sort().values.tolist()
    return keep


def _masked(model, graph, keep):
    """Dense model whose consumers ignore the dropped channels (their input weights zeroed)."""
    dense = copy.deepcopy(model)
    mods = dict(dense.named_modules())
    with torch.no_grad():
        for g in graph.prunable:
            drop = sorted(set(range(g.size)) - set(keep.get(g.id, range(g.size))))
            for mem in g.members:
                if mem.dim == "in" and mem.kind in ("conv2d", "linear", "select"):
                    m = mods[mem.layer]
                    cols = [mem.offset + c * mem.span + k for c in drop for k in range(mem.span)]
                    m.weight[:, cols] = 0
    return dense


@pytest.mark.parametrize("name", ["resnet20-cifar10", "resnet56-cifar10"])
def test_cifar_random_prune_is_valid_and_exact(name):
    model = load_model(name)
    graph = channel_groups(model, X[:1])
    # three residual stages stay separate groups thanks to the selection shortcut
    assert len([g for g in graph.prunable if len(g.producers()) > 3]) == 3
    assert not graph.group("linear").prunable
    keep = _random_keep(graph)
    small = prune(model, keep, graph=graph)
    with torch.no_grad():
        ref, out, want = model(X), small(X), _masked(model, graph, keep)(X)
    assert out.shape == ref.shape and torch.isfinite(out).all()
    assert sum(p.numel() for p in small.parameters()) < 0.75 * sum(p.numel() for p in model.parameters())
    # the pruned model *is* the dense one with the removed channels zeroed (option-A rewrite included)
    assert (out - want).abs().max().item() <= 1e-5 * max(1.0, want.abs().max().item())
    with torch.no_grad():
        assert (prune(model, {}, graph=graph)(X) - ref).abs().max().item() <= 1e-5
    # a pruned model is an ordinary module: it saves, loads and agrees with ONNX Runtime
    buf = __import__("io").BytesIO()
    torch.save(small, buf)
    buf.seek(0)
    again = torch.load(buf, weights_only=False)
    with torch.no_grad():
        assert torch.equal(again(X), out)


def test_cifar_pruned_onnx_agrees(tmp_path):
    import onnxruntime as ort

    from edgeprune.compile.onnx_export import export_onnx

    model = load_model("resnet20-cifar10")
    graph = channel_groups(model, X[:1])
    small = prune(model, _random_keep(graph, seed=3), graph=graph)
    path = export_onnx(small, X[:1], tmp_path / "s.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: X[:1].numpy()})[0]
    with torch.no_grad():
        want = small(X[:1]).numpy()
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max())


def test_prune_without_graph_and_input_untouched():
    model = load_model("resnet20-cifar10")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    graph = channel_groups(model, X[:1])
    g = graph.prunable[0]
    small = prune(model, {g.id: list(range(8))}, X[:1])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())


def test_prune_rejects_bad_requests():
    model = load_model("resnet20-cifar10")
    graph = channel_groups(model, X[:1])
    g = graph.prunable[0]
    with pytest.raises(BadInput, match="unknown channel group"):
        prune(model, {"nope": [0]}, graph=graph)
    with pytest.raises(BadInput, match="zero channels"):
        prune(model, {g.id: []}, graph=graph)
    with pytest.raises(BadInput, match="out of range"):
        prune(model, {g.id: [g.size]}, graph=graph)
    with pytest.raises(BadInput, match="not prunable"):
        prune(model, {"linear": [0]}, graph=graph)


class _Custom(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(8, 8))

    def forward(self, x):
        return x * self.scale.sum()


class _Wrapped(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.odd = _Custom()
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(self.odd(self.conv(x)).mean((2, 3)))


def test_unknown_layer_freezes_its_group_naming_it():
    """issue #24: an unknown leaf layer with parameters never rejects the model; its groups are frozen."""
    graph = channel_groups(_Wrapped().eval(), torch.randn(1, 3, 8, 8))
    g = graph.group("conv")
    assert not g.prunable and "odd (_Custom)" in g.reason and "register_layer" in g.reason
    with pytest.raises(BadInput, match="not prunable"):
        prune(_Wrapped().eval(), {"conv": [0]}, graph=graph)


class _Split(nn.Module):
    """Splits channels at a fixed size: pruning the conv would silently move the boundary."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 1)
        self.a, self.b = nn.Conv2d(8, 4, 1), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = self.conv(x)
        return self.a(y[:, :8]) + self.b(y[:, 8:])


class _GroupNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 1)
        self.gn = nn.GroupNorm(4, 16)
        self.head = nn.Conv2d(16, 2, 1)

    def forward(self, x):
        return self.head(self.gn(self.conv(x)))


@pytest.mark.parametrize("cls, word", [(_Split, "split"), (_GroupNorm, "GroupNorm")])
def test_unsupported_patterns_are_frozen(cls, word):
    model = cls().eval()
    graph = channel_groups(model, torch.randn(1, 3, 8, 8))
    g = next(g for g in graph if any(m.layer == "conv" and m.dim == "out" for m in g.members))
    assert not g.prunable and word.lower() in g.reason.lower()
    with pytest.raises(BadInput, match="not prunable"):
        prune(model, {g.id: [0]}, graph=graph)


def test_granularity_helpers():
    assert round_channels(11.2, 8, 16) == 8
    assert round_channels(20, 8, 21) == 16
    assert round_channels(3, 8, 64) == 8  # at least one block
    assert round_channels(30, 8, 30) == 30  # the whole (unaligned) layer is always allowed
    assert allowed_counts(20, 8) == [8, 16, 20]
