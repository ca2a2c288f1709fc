"""Hessian-based criteria: Hutchinson diagonal (OBD-style), SOSP-H, and the per-layer spectral radius.

All second derivatives are Hessian-vector products by double backward
(``torch.autograd.grad(..., create_graph=True)``); the Hessian is never formed.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from edgeprune.graph import ChannelGraph
from edgeprune.importance.base import (
    Masker,
    Scores,
    check_finite_grad,
    checked_loss,
    criterion,
    group_members,
    mask_points,
)


def _mask_hvps(model: nn.Module, graph: ChannelGraph, batches: list, directions: Callable[[dict[str, torch.Tensor], int], list[dict[str, torch.Tensor]]],
               where: str) -> tuple[dict[str, torch.Tensor], list[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]]]:
    """Gradient (averaged over batches) and Hessian-vector products w.r.t. one mask per group (shared by
    samples and by the group's output points). ``directions(masks, batch_index)`` gives the vectors
    for a batch; returns (mean gradient, [(v, H v) per batch and direction])."""
    model.eval()
    points = mask_points(model, graph)
    gsum = {g.id: torch.zeros(g.size, dtype=torch.float64) for g in graph.prunable}
    pairs = []
    with Masker(model, points) as mk:
        for bi, (x, y) in enumerate(batches):
            masks = {g.id: torch.ones(g.size, requires_grad=True) for g in graph.prunable}
            mk.values = {i: masks[p.group] for i, p in enumerate(points)}
            loss = checked_loss(model, x, y, where=where)
            ids = list(masks)
            grads = torch.autograd.grad(loss, [masks[k] for k in ids], create_graph=True, allow_unused=True)
            grads = [g if g is not None else torch.zeros_like(masks[k]) for g, k in zip(grads, ids)]
            for k, g in zip(ids, grads):
                check_finite_grad(g, where)
                gsum[k] += g.detach().double()
            dirs = directions(masks, bi)
            for j, v in enumerate(dirs):
                hv = torch.autograd.grad(grads, [masks[k] for k in ids], grad_outputs=[v[k] for k in ids],
                                         retain_graph=j < len(dirs) - 1, allow_unused=True)
                hv = {k: (h.detach().double() if h is not None else torch.zeros(masks[k].shape, dtype=torch.float64)) for k, h in zip(ids, hv)}
                for h in hv.values():
                    check_finite_grad(h, where)
                pairs.append(({k: v[k].double() for k in ids}, hv))
        mk.values = {}
    n = max(1, len(batches))
    return {k: v / n for k, v in gsum.items()}, pairs


@criterion("hessian", "second-order loss change of removing the channel: -g + 0.5*H_cc, Hutchinson estimate of the Hessian diagonal (HVPs)",
           needs_data=True, needs_grad=True, combine="sum",
           paper="LeCun et al. 1990, Optimal Brain Damage; Yao et al. 2020, PyHessian (Hutchinson estimates)", signed=True)
def hessian(model: nn.Module, graph: ChannelGraph, batches: list, probes: int = 2, seed: int = 0, **options) -> Scores:
    """``dL_c = -g_c + 0.5 * H_cc`` for the step ``delta m_c = -1`` on the channel's mask.

    The mask scales the channel's output points after BN, so ``H_cc`` equals
    ``w_c^T H w_c`` over the BN scale and shift of the channel: the quadratic
    term of zeroing the channel's own parameters. The diagonal is estimated
    with Hutchinson's ``E[v * Hv]`` over ``probes`` Rademacher vectors per
    batch (exact Hessian-vector products by double backward, all groups at
    once). The group's output points share one mask (combine: sum). Signed:
    negative = removal lowered the loss on these batches.
    """
    gen = torch.Generator().manual_seed(int(seed))

    def rademacher(masks: dict[str, torch.Tensor], bi: int) -> list[dict[str, torch.Tensor]]:
        return [{k: (torch.randint(0, 2, m.shape, generator=gen) * 2 - 1).float() for k, m in masks.items()} for _ in range(probes)]

    g, pairs = _mask_hvps(model, graph, batches, rademacher, "hessian")
    diag = {k: torch.zeros_like(v) for k, v in g.items()}
    for v, hv in pairs:
        for k in diag:
            diag[k] += v[k] * hv[k]
    n = max(1, len(pairs))
    return {k: (-g[k] + 0.5 * diag[k] / n).float() for k in g}


@criterion("sosp-h", "SOSP-H: |-g_c + 0.5*(H 1)_c|, structured second-order saliency with all channels' correlations, one HVP per batch",
           needs_data=True, needs_grad=True, combine="sum",
           paper="Nonnenmacher et al. 2022, SOSP: Efficiently Capturing Global Correlations by Second-Order Structured Pruning (ICLR)")
def sosp_h(model: nn.Module, graph: ChannelGraph, batches: list, signed: bool = False, **options) -> Scores:
    """Second-order structured saliency with all structures' correlations, at first-order cost.

    The loss change of removing a set M of channels is
    ``-g^T 1_M + 0.5 1_M^T H 1_M`` on the masks. SOSP-H keeps the second-order
    term's correlations with every other structure by replacing ``H 1_M`` with
    ``H 1`` (one Hessian-vector product along the all-ones direction per
    batch), giving the per-channel saliency ``|-g_c + 0.5 (H 1)_c|``
    (``signed=True`` drops the absolute value). ``H 1`` here is the exact Hessian
    (double backward), where the paper uses a Gauss-Newton product; a group's
    output points share one mask (combine: sum).
    """
    g, pairs = _mask_hvps(model, graph, batches, lambda masks, bi: [{k: torch.ones_like(m) for k, m in masks.items()}], "sosp-h")
    h1 = {k: torch.zeros_like(v) for k, v in g.items()}
    for _v, hv in pairs:
        for k in h1:
            h1[k] += hv[k]
    n = max(1, len(pairs))
    out = {k: -g[k] + 0.5 * h1[k] / n for k in g}
    return {k: (v if signed else v.abs()).float() for k, v in out.items()}


# --------------------------------------------------------------------------- per-layer sensitivities on weights


def _weighted_layers(model: nn.Module) -> dict[str, nn.Parameter]:
    return {n: m.weight for n, m in model.named_modules()
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)) and isinstance(getattr(m, "weight", None), nn.Parameter)
            and m.weight.requires_grad}


def hessian_trace(model: nn.Module, batches: list, probes: int = 8, seed: int = 0) -> dict[str, float]:
    """Hutchinson estimate of tr(H_ll) for every conv/linear weight: ``E[v_l^T (H v)_l]``, Rademacher v.

    One HVP serves every layer at once (cross-layer terms vanish in expectation).
    """
    model.eval()
    layers = _weighted_layers(model)
    names = list(layers)
    params = [layers[n] for n in names]
    gen = torch.Generator().manual_seed(int(seed))
    acc = dict.fromkeys(names, 0.0)
    count = 0
    for x, y in batches:
        loss = checked_loss(model, x, y, where="hessian-trace")
        grads = torch.autograd.grad(loss, params, create_graph=True)
        for j in range(probes):
            vs = [(torch.randint(0, 2, p.shape, generator=gen) * 2 - 1).to(p.dtype) for p in params]
            hv = torch.autograd.grad(grads, params, grad_outputs=vs, retain_graph=j < probes - 1)
            for n, v, h in zip(names, vs, hv):
                check_finite_grad(h, "hessian-trace")
                acc[n] += float((v * h).sum())
            count += 1
    return {n: acc[n] / max(1, count) for n in names}


def spectral_radius(model: nn.Module, batches: list, iterations: int = 8, seed: int = 0,
                    layers: list[str] | None = None) -> dict[str, float]:
    """Largest |eigenvalue| of each conv/linear weight's Hessian block, by power iteration on HVPs.

    The first batch only (the cost is ``iterations`` double-backward passes per
    layer); the Rayleigh quotient of the last iterate is returned.
    """
    model.eval()
    all_layers = _weighted_layers(model)
    names = layers or list(all_layers)
    params = [all_layers[n] for n in names]
    x, y = batches[0]
    loss = checked_loss(model, x, y, where="spectral-radius")
    grads = torch.autograd.grad(loss, params, create_graph=True)
    gen = torch.Generator().manual_seed(int(seed))
    out = {}
    for li, (n, p, g) in enumerate(zip(names, params, grads)):
        v = torch.randn(p.shape, generator=gen)
        v = v / v.norm()
        lam = 0.0
        for _ in range(iterations):
            (hv,) = torch.autograd.grad(g, p, grad_outputs=v, retain_graph=True)
            check_finite_grad(hv, "spectral-radius")
            lam = float((v * hv).sum())
            nrm = hv.norm()
            if nrm == 0:
                break
            v = hv / nrm
        out[n] = abs(lam)
    return out


@criterion("hessian-spectral", "Hessian-aware: 0.5 * spectral radius of the layer's Hessian block * ||w_c||^2, summed over producers",
           needs_data=True, needs_grad=True, combine="sum",
           paper="Hessian-aware pruning via the Hessian's spectral radius (literature/abstracts.txt); Yu et al. 2022, Hessian-Aware Pruning and Optimal Neural Implant")
def hessian_spectral(model: nn.Module, graph: ChannelGraph, batches: list, iterations: int = 6, seed: int = 0, **options) -> Scores:
    """An upper bound of the quadratic loss term of zeroing channel c's filters:
    ``0.5 * rho_l * ||w_c,l||^2`` with ``rho_l`` the spectral radius of layer l's Hessian block (power
    iteration), summed over the group's conv/linear producers (combine: sum). Per-layer sensitivity
    times filter energy: layers with a flat loss surface can lose more.
    """
    modules = dict(model.named_modules())
    prods = sorted({m.layer for g in graph.prunable for m in g.members if m.dim == "out" and m.kind in ("conv2d", "linear")})
    rho = spectral_radius(model, batches, iterations=iterations, seed=seed, layers=[p for p in prods if p in _weighted_layers(model)])
    out: Scores = {}
    for g in graph.prunable:
        s = torch.zeros(g.size, dtype=torch.float64)
        for mod, mem in group_members(graph, modules, g):
            if mem.dim == "out" and mem.layer in rho and mod.weight.shape[0] == g.size:
                s += 0.5 * rho[mem.layer] * (mod.weight.detach().double().flatten(1) ** 2).sum(1)
        out[g.id] = s.float()
    return out
