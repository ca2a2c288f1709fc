"""The custom-leaf-layer hook (``edgeprune.graph.register_layer``) and the import layering of graph/ and prune/."""
from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgeprune.errors import BadInput
from edgeprune.graph import LAYER_PRUNERS, channel_groups, register_layer
from edgeprune.prune import prune

ROOT = Path(__file__).resolve().parents[1]


class Mix(nn.Module):
    """A hand-written 1x1 conv: a leaf layer with parameters that edgeprune does not know natively."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, generator=torch.Generator().manual_seed(3)))

    @property
    def in_channels(self) -> int:
        return self.weight.shape[1]

    @property
    def out_channels(self) -> int:
        return self.weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight[:, :, None, None])


class Unknown(Mix):
    """The same layer, never registered (registration is per exact class, as in Torch-Pruning)."""


def _prune_mix(layer: Mix, out_keep: torch.Tensor | None, in_keep: torch.Tensor | None) -> None:
    w = layer.weight.data
    if out_keep is not None:
        w = w[out_keep]
    if in_keep is not None:
        w = w[:, in_keep]
    layer.weight = nn.Parameter(w.contiguous())


class Net(nn.Module):
    def __init__(self, mix: type = Mix) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.mix = mix(8, 6)
        self.conv2 = nn.Conv2d(6, 4, 3, padding=1)
        self.fc = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.mix(F.relu(self.bn1(self.conv1(x)))))
        x = F.adaptive_avg_pool2d(F.relu(self.conv2(x)), 1).flatten(1)
        return self.fc(x)


X = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def registered():
    """Mix registered for the test only."""
    entry = register_layer(Mix, prune_fn=_prune_mix, kind="mix")
    yield entry
    LAYER_PRUNERS.pop(Mix, None)


def _net(mix: type = Mix) -> Net:
    torch.manual_seed(0)
    net = Net(mix).eval()
    with torch.no_grad():  # non-trivial BN statistics
        net.bn1.running_mean.uniform_(-0.5, 0.5)
        net.bn1.running_var.uniform_(0.5, 2.0)
    return net


def test_registered_leaf_layer_is_traced_and_pruned(registered):
    net = _net()
    graph = channel_groups(net, X[:1])
    by_id = {g.id: g for g in graph.groups}
    assert {"conv1", "mix", "conv2"} <= set(by_id)
    assert by_id["mix"].prunable and "mix" in by_id["mix"].producers() and "conv2" in by_id["mix"].consumers()
    assert "mix" in by_id["conv1"].consumers()
    assert {(m.layer, m.kind, m.dim) for m in by_id["mix"].members} >= {("mix", "mix", "out"), ("conv2", "conv2d", "in")}
    keep = {"conv1": [0, 2, 3, 7], "mix": [1, 2, 5]}
    small = prune(net, keep, graph=graph)
    assert tuple(small.mix.weight.shape) == (3, 4) and isinstance(small.mix.weight, nn.Parameter)
    assert small.conv1.out_channels == 4 and small.bn1.num_features == 4 and small.conv2.in_channels == 3
    assert tuple(net.mix.weight.shape) == (6, 8)  # the input model is untouched
    ref = copy.deepcopy(net)  # dropped channels ignored by their consumers: the same function
    with torch.no_grad():
        ref.mix.weight[:, [1, 4, 5, 6]] = 0
        ref.conv2.weight[:, [0, 3, 4]] = 0
        assert torch.allclose(small(X), ref(X), atol=1e-5)


def test_torch_pruning_pruner_is_built_from_the_hook(registered):
    tp_pruner = registered.torch_pruning()
    layer = Mix(8, 6)
    assert tp_pruner.get_out_channels(layer) == 6 and tp_pruner.get_in_channels(layer) == 8
    tp_pruner.prune_out_channels(layer, [0, 5])
    tp_pruner.prune_in_channels(layer, [7])
    assert tuple(layer.weight.shape) == (4, 7)


def test_unregistered_leaf_layer_freezes_its_groups_with_a_reason(registered):
    """An unknown leaf layer with parameters never rejects the model: the groups it touches are frozen, the
    reason names it and says how to register a handler, and the other groups stay prunable."""
    net = _net(Unknown)
    graph = channel_groups(net, X[:1])
    frozen = [g for g in graph if not g.prunable and "mix" in g.reason]
    assert {g.id for g in frozen} == {"conv1"}  # conv1 -> bn1 -> mix (its input side)
    msg = frozen[0].reason
    assert "Unknown" in msg and "register_layer" in msg and "\n" not in msg
    assert graph.group("conv2").prunable and graph.layers["conv2"].in_group is None  # mix's output is fixed
    small = prune(net, {"conv2": [0, 2]}, graph=graph)  # the rest of the model still prunes
    assert small.conv2.out_channels == 2 and tuple(small.mix.weight.shape) == (6, 8)
    with pytest.raises(BadInput, match="not prunable"):
        prune(net, {"conv1": [0, 1]}, graph=graph)


class LayerScale(nn.Module):
    """timm's LayerScale: ``x * gamma`` over the last (channel) axis; an unknown leaf with parameters."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.linspace(0.5, 1.5, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class LayerScale2d(LayerScale):
    """timm's LayerScale2d / ConvNeXt's gamma: ``x * gamma.reshape(1, -1, 1, 1)`` (a reshape that keeps channels)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(self.gamma.reshape(1, -1, 1, 1))


class Block(nn.Module):
    """A residual MLP block over tokens with a layer scale (ViT / ConvNeXt style)."""

    def __init__(self, dim: int = 16, scale: type = LayerScale) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 3, padding=1)
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        self.ls = scale(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if isinstance(self.ls, LayerScale2d):
            x = x + self.ls(self.fc2(F.gelu(self.fc1(x.permute(0, 2, 3, 1)))).permute(0, 3, 1, 2))
        else:
            t = x.permute(0, 2, 3, 1)  # channels-last tokens
            x = (t + self.ls(self.fc2(F.gelu(self.fc1(t))))).permute(0, 3, 1, 2)
        return self.head(x.mean((2, 3)))


def _group_of(graph, layer: str, dim: str = "out"):
    return next(g for g in graph if (layer, dim) in {(m.layer, m.dim) for m in g.members})


def _prune_scale(layer: LayerScale, out_keep: torch.Tensor | None, in_keep: torch.Tensor | None) -> None:
    assert in_keep is None
    layer.gamma = nn.Parameter(layer.gamma.data[out_keep].contiguous())


def test_layer_scale_unregistered_is_frozen_then_registered_is_pruned():
    torch.manual_seed(0)
    net = Block().eval()
    x = torch.randn(1, 3, 6, 6)
    graph = channel_groups(net, x)
    assert graph.group("fc1").prunable  # the MLP hidden width never touches the layer scale
    stem = _group_of(graph, "stem")
    assert not stem.prunable and "ls (LayerScale)" in stem.reason and "register_layer(LayerScale" in stem.reason
    try:
        register_layer(LayerScale, prune_fn=_prune_scale, channelwise=True)
        graph = channel_groups(net, x)
        stem = _group_of(graph, "stem")
        assert stem.prunable, stem.reason
        assert {("fc2", "out"), ("head", "in")} <= {(m.layer, m.dim) for m in stem.members}  # one residual stream
        assert ("ls", "layerscale", "out") in {(m.layer, m.kind, m.dim) for m in stem.members}
        assert "ls" not in stem.producers() and "ls" not in stem.consumers()
        keep = list(range(0, 16, 2))
        small = prune(net, {stem.id: keep, "fc1": list(range(40))}, graph=graph)
        assert tuple(small.ls.gamma.shape) == (8,) and small.stem.out_channels == 8 and small.fc2.out_features == 8
        assert torch.equal(small.ls.gamma.data, net.ls.gamma.data[keep])
        with torch.no_grad():
            assert small(x).shape == (1, 10)
    finally:
        LAYER_PRUNERS.pop(LayerScale, None)


def test_a_layer_scale_reshape_does_not_freeze_the_stage():
    """issue #24: ConvNeXt's ``gamma.reshape(1, -1, 1, 1)`` only adds size-1 axes; it keeps channel order."""
    torch.manual_seed(0)
    net = Block(scale=LayerScale2d).eval()
    x = torch.randn(1, 3, 6, 6)
    try:
        register_layer(LayerScale2d, prune_fn=_prune_scale, channelwise=True)
        graph = channel_groups(net, x)
        stem = _group_of(graph, "stem")
        assert stem.prunable, stem.reason
        small = prune(net, {stem.id: list(range(8))}, graph=graph)
        assert tuple(small.ls.gamma.shape) == (8,)
    finally:
        LAYER_PRUNERS.pop(LayerScale2d, None)


def test_register_layer_checks_its_arguments():
    with pytest.raises(BadInput, match="nn.Module subclass"):
        register_layer(int, prune_fn=_prune_mix)
    with pytest.raises(BadInput, match="prune_fn"):
        register_layer(Mix, prune_fn=None)
    assert Mix not in LAYER_PRUNERS


def test_the_model_zoo_registers_select_shortcut():
    from edgeprune.models import SelectShortcut

    assert LAYER_PRUNERS[SelectShortcut].kind == "select"


def test_graph_and_prune_modules_import_alone_without_the_model_zoo():
    """Each module of edgeprune.graph / edgeprune.prune imports in a clean state: no cycle, no edgeprune.models."""
    mods = sorted({".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                   for pkg in ("graph", "prune") for p in (ROOT / "edgeprune" / pkg).glob("*.py")})
    code = (
        "import importlib, sys\n"
        f"for name in {mods!r}:\n"
        "    for k in [k for k in sys.modules if k == 'edgeprune' or k.startswith('edgeprune.')]:\n"
        "        del sys.modules[k]\n"
        "    importlib.import_module(name)\n"
        "    zoo = [k for k in sys.modules if k.startswith('edgeprune.models')]\n"
        "    assert not zoo, (name, zoo)\n"
        "print(len(" + repr(mods) + "))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.strip()) >= 10
