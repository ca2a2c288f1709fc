"""ThiNet: greedy channel selection minimising the next layer's reconstruction error (Luo et al. 2017)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgeprune.graph import ChannelGraph, Member
from edgeprune.importance.base import Scores, consumer_inputs, criterion


def _contributions(mod: nn.Module, mem: Member, v: torch.Tensor, x_full_shape: tuple[int, ...], n: int,
                   gen: torch.Generator) -> torch.Tensor | None:
    """(n, C): sampled per-input-channel contributions to random output entries of a consumer.

    For a conv consumer, entry (image, out channel o, position p) of the output
    is sum_c sum_k W[o, c, k] x[c, patch(p), k]; the c-th term is channel c's
    contribution. ``v`` is the consumer's view (B, C, positions) of the group.
    """
    b, c, _ = v.shape
    w = getattr(mod, "weight", None)
    if not isinstance(w, torch.Tensor):
        return None
    w = w.detach()
    off = int(getattr(mem, "offset", 0) or 0)
    if isinstance(mod, nn.Linear) or w.dim() == 2 and not hasattr(mod, "stride"):
        k = v.shape[2]
        wc = w[:, off * k : (off + c) * k].reshape(w.shape[0], c, k) if v.shape[2] > 1 else w[:, off : off + c, None]
        img = torch.randint(0, b, (n,), generator=gen)
        o = torch.randint(0, w.shape[0], (n,), generator=gen)
        return (wc[o] * v[img]).sum(2)
    if w.dim() == 2:  # option-A selection: a fixed 1x1 conv with stride
        w = w[:, :, None, None]
    groups = getattr(mod, "groups", 1)
    if groups != 1:
        return None  # grouped / depthwise consumers: no cross-channel sum to reconstruct
    h, wd = x_full_shape[-2], x_full_shape[-1]
    x = v.reshape(b, c, h, wd)
    kh, kw = w.shape[-2:]
    pair = lambda t: tuple(t) if isinstance(t, (tuple, list)) else (t, t)
    (sh, sw), (dh, dw) = pair(getattr(mod, "stride", 1)), pair(getattr(mod, "dilation", 1))
    padding = getattr(mod, "padding", 0)
    if isinstance(padding, str):
        return None
    ph, pw = pair(padding)
    xp = F.pad(x, (pw, pw, ph, ph))
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    img = torch.randint(0, b, (n,), generator=gen)
    pos = torch.randint(0, ho * wo, (n,), generator=gen)
    o = torch.randint(0, w.shape[0], (n,), generator=gen)
    rows = (pos // wo * sh)[:, None] + torch.arange(kh) * dh  # (n, kh)
    cols = (pos % wo * sw)[:, None] + torch.arange(kw) * dw  # (n, kw)
    patches = xp[img[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # (n, kh, kw, C)
    patches = patches.permute(0, 3, 1, 2).flatten(2)  # (n, C, k)
    wc = w[o][:, off : off + c].flatten(2).to(patches.dtype)  # (n, C, k)
    return (patches * wc).sum(2)


def greedy_order(contrib: torch.Tensor) -> tuple[list[int], list[float]]:
    """ThiNet's greedy removal: repeatedly remove the channel whose contributions, added to those already
    removed, give the least squared error. Returns the removal order and the error after each step."""
    n, c = contrib.shape
    removed: list[int] = []
    errs: list[float] = []
    resid = torch.zeros(n, dtype=contrib.dtype)
    left = list(range(c))
    for _ in range(c):
        cand = resid[:, None] + contrib[:, left]
        e = (cand**2).mean(0)
        j = int(torch.argmin(e))
        ch = left.pop(j)
        removed.append(ch)
        errs.append(float(e[j]))
        resid = resid + contrib[:, ch]
    return removed, errs


@criterion("thinet", "greedy removal order minimising the consumers' reconstruction error (ThiNet); score = error when removed",
           needs_data=True, needs_grad=False, combine="sum",
           paper="Luo et al. 2017, ThiNet: A Filter Level Pruning Method for Deep Neural Network Compression (ICCV)")
def thinet(model: nn.Module, graph: ChannelGraph, batches: list, samples: int = 2048, seed: int = 0, **options) -> Scores:
    """Contributions of each input channel to sampled output entries of the group's consumers (all of
    them stacked: combine sum of squared errors) are collected on the data; the greedy order removes
    first the channel that adds least reconstruction error. A channel's score is the running maximum of
    the mean squared error at the step it is removed (so the greedy order maps to ranks, and scores of
    different groups compare in error units), plus a tiny rank term that breaks ties in that order.
    """
    gen = torch.Generator().manual_seed(int(seed))
    per_batch = max(1, samples // max(1, len(batches)))
    parts: dict[str, list[torch.Tensor]] = {g.id: [] for g in graph.prunable}
    shapes: dict[str, tuple[int, ...]] = {}

    def fn(gid: str, mem: Member, mod: nn.Module, v: torch.Tensor) -> None:
        shp = shapes.get(mem.layer)
        if shp is None:
            return
        t = _contributions(mod, mem, v.double(), shp, per_batch, gen)
        if t is not None:
            parts[gid].append(t)

    # consumer input shapes (for unfolding conv maps)
    modules = dict(model.named_modules())
    hooks = [modules[m.layer].register_forward_pre_hook(lambda mod, inp, name=m.layer: shapes.__setitem__(name, tuple(inp[0].shape)))
             for g in graph.prunable for m in g.members if m.dim == "in" and m.layer in modules]
    try:
        with torch.no_grad():
            model.eval()(batches[0][0][:1])
    finally:
        for h in hooks:
            h.remove()
    consumer_inputs(model, graph, batches, fn)
    out: Scores = {}
    for g in graph.prunable:
        if not parts[g.id]:
            out[g.id] = torch.zeros(g.size)
            continue
        contrib = torch.cat(parts[g.id])
        order, errs = greedy_order(contrib)
        score = torch.zeros(g.size, dtype=torch.float64)
        run = 0.0
        for rank, (ch, e) in enumerate(zip(order, errs)):
            run = max(run, e)
            score[ch] = run + rank * 1e-12 * (1.0 + run)
        out[g.id] = score.float()
    return out
