"""Channel groups and physical pruning on the torchvision zoo (random weights, small inputs).

Smaller configurations of the same classes keep the suite fast: every CNN runs
on 64x64 inputs; ViT-B/16 keeps its widths (768 hidden, 12 heads of 64, MLP
3072) but has 2 encoder layers and 64x64 images (16 patches).
"""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from edgeprune.errors import BadInput
from edgeprune.graph import channel_groups
from edgeprune.prune import prune
from edgeprune.prune.granularity import round_channels

ZOO = ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "densenet121",
       "regnet_y_400mf", "shufflenet_v2_x1_0", "squeezenet1_1", "vgg11_bn", "convnext_tiny", "vit_b_16"]
# models whose channels are normalised together (LayerNorm over channels, attention): removing a
# channel is not the same as zeroing it, so the masked-model identity does not apply
NORMALISED = {"convnext_tiny", "vit_b_16"}


def build(tv, name: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    if name == "vit_b_16":
        from torchvision.models.vision_transformer import VisionTransformer

        model = VisionTransformer(image_size=64, patch_size=16, num_layers=2, num_heads=12, hidden_dim=768, mlp_dim=3072)
    else:
        model = getattr(tv.models, name)(weights=None)
    with torch.no_grad():  # non-trivial BN statistics, so a wrong channel map shows
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval(), torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def random_keep(graph, frac: float = 0.3, multiple: int = 8, seed: int = 0) -> dict[str, list[int]]:
    """Drop a random ``frac`` of every prunable group, kept count rounded to ``multiple`` (and the group's unit)."""
    gen = torch.Generator().manual_seed(seed)
    keep = {}
    for g in graph.prunable:
        k = round_channels(g.size * (1 - frac), math.lcm(multiple, g.unit), g.size)
        units = torch.randperm(g.units, generator=gen)[: k // g.unit]
        keep[g.id] = g.expand_units(units.tolist())
    return keep


def masked(model: nn.Module, graph, keep) -> nn.Module:
    """The dense model with the dropped channels zeroed where they are read (consumer input weights)."""
    dense = copy.deepcopy(model)
    mods = dict(dense.named_modules())
    with torch.no_grad():
        for g in graph.prunable:
            if g.id not in keep:
                continue
            drop = sorted(set(range(g.size)) - {int(i) for i in keep[g.id]})
            for mem in g.members:
                m = mods.get(mem.layer)
                if mem.dim != "in" or m is None or getattr(m, "groups", 1) != 1:
                    continue  # grouped/depthwise convs pass channels through; their readers are zeroed
                cols = [mem.offset + c * mem.span + k for c in drop for k in range(mem.span)]
                m.weight[:, cols] = 0
    return dense


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def ort_agrees(model: nn.Module, x: torch.Tensor, tmp_path) -> float:
    import onnxruntime as ort

    from edgeprune.compile.onnx_export import export_onnx

    path = export_onnx(model, x, tmp_path / "m.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        want = model(x).numpy()
    assert got.shape == want.shape
    return float(np.abs(got - want).max() / max(1.0, float(np.abs(want).max())))


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test here runs with one torch thread (tests/conftest.py one_torch_thread)."""


@pytest.mark.parametrize("name", ZOO)
def test_zoo_prune(torchvision, name, tmp_path):
    model, x = build(torchvision, name)
    graph = channel_groups(model, x)
    assert graph.prunable, name
    ids = [g.id for g in graph]
    assert len(ids) == len(set(ids))
    for g in graph:
        if not g.prunable:
            assert g.reason
    assert all(info.signature.in_channels > 0 for info in graph.layers.values())
    with torch.no_grad():
        ref = model(x)

    nothing = prune(model, {}, graph=graph)
    with torch.no_grad():
        assert (nothing(x) - ref).abs().max().item() <= 1e-5 * max(1.0, ref.abs().max().item())

    keep = random_keep(graph)
    small = prune(model, keep, graph=graph)
    with torch.no_grad():
        out = small(x)
    assert out.shape == ref.shape
    assert torch.isfinite(out).all()
    assert n_params(small) < n_params(model)
    assert n_params(model) == n_params(build(torchvision, name)[0])  # the input model is untouched
    if name not in NORMALISED:
        with torch.no_grad():
            want = masked(model, graph, keep)(x)
        assert (out - want).abs().max().item() <= 1e-4 * max(1.0, want.abs().max().item())
    # the pruned widths are what the signatures predict
    widths = {gid: len(k) for gid, k in keep.items()}
    sigs = graph.signatures(widths)
    mods = dict(small.named_modules())
    for lname, sig in sigs.items():
        m = mods[lname]
        if isinstance(m, nn.Conv2d):
            assert (m.in_channels, m.out_channels) == (sig.in_channels, sig.out_channels), lname
        elif isinstance(m, nn.Linear):
            assert (m.in_features, m.out_features) == (sig.in_channels, sig.out_channels), lname
    assert ort_agrees(small, x, tmp_path) <= 1e-4


def test_densenet_concat_members_have_offsets(torchvision):
    model, x = build(torchvision, "densenet121")
    graph = channel_groups(model, x)
    g = graph.group("features.denseblock1.denselayer1.conv2")
    offs = {m.layer: m.offset for m in g.members if m.dim == "in"}
    assert offs["features.denseblock1.denselayer2.conv1"] == 64  # after the 64 stem channels
    assert all(m.span == 1 for m in g.members)


def test_vgg_flatten_span(torchvision):
    model, x = build(torchvision, "vgg11_bn")
    graph = channel_groups(model, x)
    fc = [m for g in graph for m in g.members if m.layer == "classifier.0" and m.dim == "in"]
    assert fc and fc[0].span == 49


def test_regnet_grouped_conv_whole_groups(torchvision):
    model, x = build(torchvision, "regnet_y_400mf")
    graph = channel_groups(model, x)
    name = "trunk_output.block1.block1-0.f.b.0"
    conv = dict(model.named_modules())[name]
    g = next(g for g in graph if any(m.layer == name for m in g.members))
    assert g.prunable and g.unit == conv.in_channels // conv.groups == 8
    assert {(m.layer, m.dim) for m in g.members} >= {(name, "in"), (name, "out")}
    assert graph.layers[name].in_group == graph.layers[name].out_group == g.id
    with pytest.raises(BadInput, match="whole blocks"):
        prune(model, {g.id: list(range(1, g.size))}, graph=graph)
    small = prune(model, {g.id: g.expand_units(range(1, g.units))}, graph=graph)
    assert dict(small.named_modules())[name].groups == conv.groups - 1


def test_vit_prunes_whole_heads(torchvision):
    model, x = build(torchvision, "vit_b_16")
    graph = channel_groups(model, x)
    heads = [g for g in graph.prunable if g.unit == 64]
    assert len(heads) == 1 and heads[0].size == 768
    mlp = [g for g in graph.prunable if g.unit == 1]
    assert sorted(g.size for g in mlp) == [3072, 3072]
    small = prune(model, {heads[0].id: heads[0].expand_units(range(8))}, graph=graph)
    attn = small.encoder.layers[0].self_attention
    assert (attn.num_heads, attn.head_dim, attn.embed_dim) == (8, 64, 512)
    assert small.hidden_dim == 512
    with torch.no_grad():
        assert small(x).shape == (1, 1000)


def test_shufflenet_shuffle_is_not_pruned(torchvision):
    model, x = build(torchvision, "shufflenet_v2_x1_0")
    graph = channel_groups(model, x)
    frozen = [g for g in graph if not g.prunable and "reorders channels" in g.reason]
    assert frozen
    with pytest.raises(BadInput, match="not prunable"):
        prune(model, {frozen[0].id: [0]}, graph=graph)
    # the branch-internal widths stay prunable
    inner = [g for g in graph.prunable if ("stage2.0.branch2.0", "out") in {(m.layer, m.dim) for m in g.members}]
    assert inner and ("stage2.0.branch2.5", "in") in {(m.layer, m.dim) for m in inner[0].members}


def test_output_group_is_not_prunable(torchvision):
    model, x = build(torchvision, "resnet18")
    graph = channel_groups(model, x)
    assert not graph.group("fc").prunable and "network output" in graph.group("fc").reason
    assert graph.layers["conv1"].in_group is None  # the network input is in no group
    assert "fc" in graph.ignored
    g = channel_groups(model, x, ignored_layers=["layer1.0.conv1"]).group("layer1.0.conv1")
    assert not g.prunable and "ignored" in g.reason


@pytest.mark.slow
@pytest.mark.parametrize("name,size", [("resnet18", 224), ("mobilenet_v3_small", 224), ("convnext_tiny", 224),
                                       ("swin_t", 224), ("swin_s", 224), ("vit_b_16", 224)])
def test_zoo_channel_analysis_at_224_under_the_caps(torchvision, name, size):
    """issue #24: channel analysis at 224 px in a capped subprocess (benchmarks/graph_zoo.py): under 4 GB RSS and
    60 s, no false freeze on ConvNeXt, and transformers' MLP hidden widths prunable, heads pruned or frozen with a reason."""
    from benchmarks.graph_zoo import run_capped

    row = run_capped(name, size, rss_cap_gb=4.0, as_cap_gb=12.0, timeout=120.0)
    assert "error" not in row, row
    assert row["peak_rss_mb"] < 4096 and row["seconds"] < 60, row
    assert all(reason for reason in row["frozen"].values())
    if name == "convnext_tiny":
        assert not any("reorders channels" in r for r in row["frozen"].values()), row["frozen"]
        assert row["prunable"] == row["groups"] - 1  # only the classifier output is frozen
    if name == "swin_s":  # 18 blocks in stage 3 exhausted Torch-Pruning's step budget for the patch-merging concat
        assert row["prunable"] >= 24, row  # (2+2+18+2) MLP hidden widths
    if name == "swin_t":
        assert row["prunable"] >= 12  # one MLP hidden width per block (2+2+6+2)
        assert any("head split" in r or "attention heads" in r for r in row["frozen"].values())
    if name == "vit_b_16":
        assert row["prunable"] >= 13  # the embedding in whole heads + 12 MLP hidden widths
