"""NISP: neuron importance score propagation from the final response layer (Yu et al. 2018)."""
from __future__ import annotations

import copy

import torch
from torch import nn

from edgeprune.graph import ChannelGraph
from edgeprune.importance.base import Masker, Scores, criterion, mask_points


@criterion("nisp", "data-free: importance propagated backward from the outputs through |W| (NISP), per channel",
           needs_data=False, needs_grad=False, combine="sum",
           paper="Yu et al. 2018, NISP: Pruning Networks using Neuron Importance Score Propagation (CVPR)")
def nisp(model: nn.Module, graph: ChannelGraph, batches: list | None, normalize: bool = True, **options) -> Scores:
    """``s_k = |W_{k+1}|^T s_{k+1}``, from importance 1 on every output back to each channel.

    Implemented on a copy of the model whose weights are replaced by their
    absolute values, biases and BN shifts by zero and BN by its scale
    ``|gamma| / sqrt(var + eps)``: fed a positive input, every activation is
    non-negative, ReLUs pass everything, and the gradient of the summed outputs
    w.r.t. a channel is exactly the propagated score, summed over positions
    and over the group's output points (combine: sum). The final response
    layer's scores are uniform (the paper ranks them with Inf-FS; with no data
    we give every output the same weight).

    Through residual additions the propagated scores grow with depth by many
    orders of magnitude, so by default (``normalize=True``) each group's scores
    are divided by their mean: NISP ranks neurons within a layer, and the
    normalised scores compare channels relative to their own layer.
    """
    net = copy.deepcopy(model).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                if m.running_var is not None:
                    scale = (m.weight.abs() if m.weight is not None else 1.0) / torch.sqrt(m.running_var + m.eps)
                    if m.weight is not None:
                        m.weight.copy_(scale)
                    m.running_var.fill_(1.0 - m.eps)
                    m.running_mean.zero_()
                elif m.weight is not None:
                    m.weight.abs_()
                if m.bias is not None:
                    m.bias.zero_()
            else:
                for name, p in list(m.named_parameters(recurse=False)):
                    if name == "bias":
                        p.zero_()
                    else:
                        p.abs_()
                for name, b in list(m.named_buffers(recurse=False)):
                    if name == "weight" and b.is_floating_point():
                        b.abs_()
    for p in net.parameters():
        p.requires_grad_(False)
    points = mask_points(net, graph)
    ex = graph.example_inputs
    x = torch.ones_like(ex[0] if isinstance(ex, (tuple, list)) else ex)[:1].requires_grad_(True)
    sizes = {g.id: g.size for g in graph.prunable}
    with Masker(net, points) as mk:
        masks = {i: sizes[p.group] for i, p in enumerate(points)}
        mk.keep_outputs = True
        out = net(x)
        outs = [mk.outputs[i] for i in masks]
        grads = torch.autograd.grad(out.sum(), outs, allow_unused=True)
    scores: Scores = {g.id: torch.zeros(g.size, dtype=torch.float64) for g in graph.prunable}
    for i, gr in zip(masks, grads):
        if gr is None:
            continue
        gr = gr.detach().double()
        p = points[i]
        if gr.dim() > 2:
            s = gr.flatten(2).sum(2).sum(0) if not (isinstance(dict(net.named_modules())[p.producer], nn.Linear)) else gr.sum(1).sum(0)
        else:
            s = gr.sum(0)
        scores[p.group] += s
    if normalize:
        scores = {k: v / v.mean() if v.mean() > 0 else v for k, v in scores.items()}
    return {k: v.float() for k, v in scores.items()}
