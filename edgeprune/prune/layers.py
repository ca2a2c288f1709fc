"""Slicing one layer to the channels it keeps, per layer type (conv, linear, norms, attention, registered layers)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from edgeprune.errors import UnsupportedLayer
from edgeprune.graph.custom_layers import layer_pruner
from edgeprune.graph.trace import CONV, NORMS


def _keep(n: int, drop: set[int]) -> torch.Tensor:
    """Indices ``0..n-1`` without ``drop``."""
    return torch.tensor([i for i in range(n) if i not in drop], dtype=torch.long)


def _param(p: torch.Tensor | None, dim: int, keep: torch.Tensor) -> Any:
    """``p`` sliced to ``keep`` along ``dim`` (a Parameter stays a Parameter; None stays None)."""
    if p is None:
        return None
    t = p.data.index_select(dim, keep)
    return nn.Parameter(t, requires_grad=p.requires_grad) if isinstance(p, nn.Parameter) else t


def _blocks(drop: set[int], width: int, name: str, what: str) -> set[int]:
    """The blocks of ``width`` channels ``drop`` removes; raises unless it removes whole blocks."""
    blocks = {i // width for i in drop}
    if {b * width + k for b in blocks for k in range(width)} != drop:
        raise UnsupportedLayer(f"grouped conv {name}: removing {what} channels {sorted(drop)[:8]}... "
                               f"does not remove whole groups of {width}")
    return blocks


def apply_drops(model: nn.Module, drops: Mapping[tuple[str, str], set[int]], kinds: Mapping[str, tuple[str, int]]) -> None:
    """Remove channels in place: ``drops[(layer, "out"|"in")]`` from each layer (or bare parameter) in ``kinds``."""
    modules = dict(model.named_modules())
    params = dict(model.named_parameters())
    for name, (kind, pdim) in kinds.items():
        out_d = drops.get((name, "out"), set())
        in_d = drops.get((name, "in"), set())
        if not out_d and not in_d:
            continue
        if kind == "param":
            owner_name, _, attr = name.rpartition(".")
            owner = modules[owner_name]
            p = params[name]
            setattr(owner, attr, _param(p, pdim % p.dim(), _keep(p.shape[pdim], out_d)))
            continue
        m = modules[name]
        entry = layer_pruner(m)
        if entry is not None:  # a registered leaf layer slices itself
            entry.prune_fn(m, _keep(entry.out_channels(m), out_d) if out_d else None,
                           _keep(entry.in_channels(m), in_d) if in_d else None)
        elif isinstance(m, CONV):
            _prune_conv(name, m, out_d, in_d)
        elif isinstance(m, nn.Linear):
            if out_d:
                k = _keep(m.out_features, out_d)
                m.weight, m.bias = _param(m.weight, 0, k), _param(m.bias, 0, k)
                m.out_features = len(k)
            if in_d:
                k = _keep(m.in_features, in_d)
                m.weight = _param(m.weight, 1, k)
                m.in_features = len(k)
        elif isinstance(m, NORMS):
            k = _keep(m.num_features, out_d | in_d)
            m.weight, m.bias = _param(m.weight, 0, k), _param(m.bias, 0, k)
            for b in ("running_mean", "running_var"):
                if getattr(m, b, None) is not None:
                    m._buffers[b] = getattr(m, b).index_select(0, k)
            m.num_features = len(k)
        elif isinstance(m, nn.LayerNorm):
            k = _keep(m.normalized_shape[0], out_d | in_d)
            m.weight, m.bias = _param(m.weight, 0, k), _param(m.bias, 0, k)
            m.normalized_shape = (len(k),)
        elif isinstance(m, nn.PReLU):
            if m.num_parameters > 1:
                k = _keep(m.num_parameters, out_d | in_d)
                m.weight = _param(m.weight, 0, k)
                m.num_parameters = len(k)
        elif isinstance(m, nn.Embedding):
            k = _keep(m.embedding_dim, out_d | in_d)
            m.weight = _param(m.weight, 1, k)
            m.embedding_dim = len(k)
        elif isinstance(m, nn.MultiheadAttention):
            _prune_mha(name, m, out_d | in_d)
        else:
            raise UnsupportedLayer(f"layer {name} ({type(m).__name__}) cannot be pruned by edgeprune")


def _prune_conv(name: str, m: nn.Module, out_d: set[int], in_d: set[int]) -> None:
    """A plain, depthwise or grouped conv (whole groups only)."""
    g, cin, cout = m.groups, m.in_channels, m.out_channels
    if g == 1:
        if out_d:
            k = _keep(cout, out_d)
            m.weight, m.bias = _param(m.weight, 0, k), _param(m.bias, 0, k)
            m.out_channels = len(k)
        if in_d:
            k = _keep(cin, in_d)
            m.weight = _param(m.weight, 1, k)
            m.in_channels = len(k)
        return
    if g == cin == cout:  # depthwise: channel c in is channel c out
        if out_d and in_d and out_d != in_d:
            raise UnsupportedLayer(f"depthwise conv {name}: input and output channels would be pruned differently")
        k = _keep(cout, out_d | in_d)
        m.weight, m.bias = _param(m.weight, 0, k), _param(m.bias, 0, k)
        m.in_channels = m.out_channels = m.groups = len(k)
        return
    ipg, opg = cin // g, cout // g
    bo, bi = _blocks(out_d, opg, name, "output"), _blocks(in_d, ipg, name, "input")
    if bo != bi:
        raise UnsupportedLayer(f"grouped conv {name}: input and output would lose different groups")
    kb = [b for b in range(g) if b not in bo]
    k = torch.tensor([b * opg + i for b in kb for i in range(opg)], dtype=torch.long)
    m.weight, m.bias = _param(m.weight, 0, k), _param(m.bias, 0, k)
    m.groups, m.out_channels, m.in_channels = len(kb), len(kb) * opg, len(kb) * ipg


def _prune_mha(name: str, m: nn.MultiheadAttention, drop: set[int]) -> None:
    """Whole heads of an ``nn.MultiheadAttention`` with packed q/k/v projections."""
    e, hd = m.embed_dim, m.head_dim
    k = _keep(e, drop)
    if len(k) % hd or _blocks(drop, hd, name, "embedding") is None:
        raise UnsupportedLayer(f"attention {name}: pruning must remove whole heads of {hd} channels")
    rows = torch.cat([k, k + e, k + 2 * e])
    m.in_proj_weight = _param(_param(m.in_proj_weight, 0, rows), 1, k)
    m.in_proj_bias = _param(m.in_proj_bias, 0, rows)
    if m.bias_k is not None:
        m.bias_k, m.bias_v = _param(m.bias_k, 2, k), _param(m.bias_v, 2, k)
    lin = m.out_proj
    lin.weight = _param(_param(lin.weight, 0, k), 1, k)
    lin.bias = _param(lin.bias, 0, k)
    lin.in_features = lin.out_features = len(k)
    m.embed_dim = m.kdim = m.vdim = len(k)
    m.num_heads = len(k) // hd


def fix_attributes(model: nn.Module) -> None:
    """Python-int channel counts that known model classes keep beside their layers (torchvision ViT)."""
    for m in model.modules():
        if type(m).__name__ == "VisionTransformer" and hasattr(m, "hidden_dim") and isinstance(getattr(m, "conv_proj", None), nn.Conv2d):
            m.hidden_dim = m.conv_proj.out_channels
        if type(m).__name__ == "EncoderBlock" and isinstance(getattr(m, "self_attention", None), nn.MultiheadAttention):
            m.num_heads = m.self_attention.num_heads
