"""Training-time unstructured sparsity: RigL (dynamic sparse training) and sparse connectivity learning.

Papers:

- RigL: Evci, Gale, Menick, Castro & Elsen 2020, *Rigging the Lottery: Making
  All Tickets Winners* (ICML). The parameter count is fixed from the start;
  every ``delta_t`` steps each layer drops the ``f(t)`` fraction of its active
  weights with the smallest magnitude and grows as many inactive ones with
  the largest gradient magnitude (initialised to zero), with
  ``f(t) = alpha / 2 * (1 + cos(pi t / t_end))`` and no updates after ``t_end``.
- SCL: Tang et al. 2022, *Automatic Sparse Connectivity Learning for Neural
  Networks* (IEEE TNNLS). Each weight is ``w * step(s)`` with a trainable score
  ``s``; the identity straight-through estimator passes the gradient to ``s``,
  the mask gradients are normalised per layer, and a regulariser on the
  number of connections pushes scores below zero. Here its weight ``lambda``
  is steered so that the learned density approaches the target; for the last
  quarter of training the mask is frozen at the top-``k`` scores (exactly the
  target sparsity; the learned sparsity before that is reported).

When to use them: when the deliverable is a sparse model (stored bytes, or a
target with sparse kernels) and there is a training budget; RigL when the
dense model is too big to train at all, SCL when training should choose how
sparse each layer is. Both are unstructured: on dense engines (ONNX Runtime,
TensorRT, TVM, VTA) they change stored bytes, not latency.

Both run in :func:`train_sparse` with their own small loop (the masks must
act at every step), so they work as a recovery step after pruning too.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeprune.errors import BadInput
from edgeprune.methods._train import (
    UNSTRUCTURED_NOTE,
    apply_masks,
    sgd_loop,
    sparsity_of,
    steps_for,
    test_split,
    weight_layers,
)
from edgeprune.ui import QUIET, UI


@dataclass
class SparseResult:
    """A sparse model, its masks, the sparsity reached and the top-1 at that sparsity."""

    model: nn.Module
    masks: dict[str, torch.Tensor]
    method: str
    target_sparsity: float
    sparsity: float
    accuracy: float | None
    steps: int
    losses: list[float] = field(default_factory=list)
    layer_sparsity: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (no model)."""
        return {"method": self.method, "target_sparsity": self.target_sparsity, "sparsity": self.sparsity,
                "accuracy": self.accuracy, "steps": self.steps, "losses": self.losses,
                "layer_sparsity": self.layer_sparsity, **self.extra, "notes": self.notes}


def layer_densities(layers: Mapping[str, nn.Module], sparsity: float, distribution: str = "erk",
                    dense_first: bool = True) -> dict[str, float]:
    """Per-layer densities averaging ``1 - sparsity`` over all weights.

    ``uniform``: every layer the same (the first layer kept dense when ``dense_first``,
    as in RigL). ``erk``: Erdos-Renyi-Kernel, density proportional to
    ``(C_in + C_out + k_h + k_w) / (C_in C_out k_h k_w)``, with layers that would
    exceed 1 set dense and the rest rescaled.
    """
    if not 0.0 <= sparsity < 1.0:
        raise BadInput(f"sparsity must be in [0, 1), got {sparsity}")
    names = list(layers)
    sizes = {n: layers[n].weight.numel() for n in names}
    total = sum(sizes.values())
    budget = (1 - sparsity) * total
    if distribution == "uniform":
        dense = {names[0]} if dense_first and len(names) > 1 else set()
        rest = total - sum(sizes[n] for n in dense)
        d = max(0.0, budget - sum(sizes[n] for n in dense)) / max(rest, 1)
        if d > 1:
            d = 1.0
        return {n: 1.0 if n in dense else d for n in names}
    if distribution != "erk":
        raise BadInput(f"unknown sparsity distribution {distribution!r} (uniform or erk)")
    raw = {}
    for n in names:
        shp = layers[n].weight.shape
        raw[n] = sum(shp) / float(np.prod(shp))
    dense: set[str] = set()
    while True:
        free = [n for n in names if n not in dense]
        left = budget - sum(sizes[n] for n in dense)
        eps = left / max(sum(raw[n] * sizes[n] for n in free), 1e-12)
        over = [n for n in free if eps * raw[n] > 1]
        if not over:
            return {n: 1.0 if n in dense else eps * raw[n] for n in names}
        dense.update(over)


def _random_masks(layers: Mapping[str, nn.Module], dens: Mapping[str, float], gen: torch.Generator) -> dict[str, torch.Tensor]:
    out = {}
    for n, m in layers.items():
        k = round(dens[n] * m.weight.numel())
        mask = torch.zeros(m.weight.numel(), dtype=torch.bool)
        mask[torch.randperm(m.weight.numel(), generator=gen)[:k]] = True
        out[n] = mask.view_as(m.weight)
    return out


def _magnitude_masks(layers: Mapping[str, nn.Module], dens: Mapping[str, float]) -> dict[str, torch.Tensor]:
    out = {}
    for n, m in layers.items():
        w = m.weight.detach().abs().flatten()
        k = round(dens[n] * w.numel())
        mask = torch.zeros(w.numel(), dtype=torch.bool)
        mask[torch.argsort(w, descending=True, stable=True)[:k]] = True
        out[n] = mask.view_as(m.weight)
    return out


def rigl_drop_fraction(step: int, t_end: int, alpha: float = 0.3) -> float:
    """RigL's cosine schedule: ``alpha / 2 * (1 + cos(pi step / t_end))`` before ``t_end``, 0 after."""
    if step >= t_end:
        return 0.0
    return alpha / 2 * (1 + math.cos(math.pi * step / max(t_end, 1)))


def rigl_update(weight: torch.Tensor, grad: torch.Tensor, mask: torch.Tensor, fraction: float) -> tuple[torch.Tensor, int]:
    """One RigL topology update of one layer: (new mask, connections moved). Active count is unchanged."""
    flat_m = mask.flatten()
    n_active = int(flat_m.sum())
    k = int(fraction * n_active)
    if k == 0 or n_active == flat_m.numel():
        return mask, 0
    w = weight.detach().abs().flatten()
    g = grad.detach().abs().flatten()
    # drop: the k active weights with the smallest magnitude
    drop_score = torch.where(flat_m, w, torch.full_like(w, float("inf")))
    drop = torch.argsort(drop_score, stable=True)[:k]
    new = flat_m.clone()
    new[drop] = False
    # grow: the k inactive (after the drop, excluding what was just dropped) with the largest |grad|
    grow_score = torch.where(new, torch.full_like(g, -1.0), g)
    grow_score[drop] = -1.0
    k_grow = min(k, int((~new).sum()) - k)
    grow = torch.argsort(grow_score, descending=True, stable=True)[:k_grow]
    new[grow] = True
    return new.view_as(mask), k


class _MaskedWeight(nn.Module):
    """``w * step(s)`` with the identity straight-through estimator (SCL)."""

    def __init__(self, scores: torch.Tensor) -> None:
        super().__init__()
        self.scores = nn.Parameter(scores)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        hard = (self.scores > 0).to(w.dtype)
        return w * (hard + self.scores - self.scores.detach())


def train_sparse(model: nn.Module, data: Any, method: str = "rigl", sparsity: float = 0.8, epochs: float = 1.0, *,
                 steps: int | None = None, lr: float = 0.05, batch_size: int = 64, max_images: int | None = None,
                 distribution: str = "erk", init: str = "magnitude", delta_t: int = 100, alpha: float = 0.3,
                 end_fraction: float = 0.75, score_lr: float = 0.05, init_fraction: float = 0.5, reg_weight: float = 5.0,
                 include_first: bool = True, include_last: bool = True, eval_limit: int | None = None,
                 seed: int = 0, inplace: bool = False, ui: UI = QUIET) -> SparseResult:
    """Train ``model`` to ``sparsity`` (fraction of conv/linear weights at zero) with RigL or SCL.

    ``epochs`` passes over the train split (or ``steps`` SGD steps; ``max_images``
    caps the images per epoch). RigL: masks start at ``sparsity`` with the
    ``distribution`` (``erk`` or ``uniform``) of per-layer densities, chosen by
    ``init`` (``magnitude``: the largest weights, for a trained model;
    ``random``: the paper's start from scratch); every ``delta_t`` steps until
    ``end_fraction`` of training the topology is updated with drop fraction
    ``alpha`` (cosine decay). SCL: scores start so that ``init_fraction`` of the
    target sparsity is already masked (the smallest weights), train with Adam
    at ``score_lr``; the connection regulariser's weight is
    ``reg_weight * max(0, density / target_density - 1)``; after ``end_fraction`` of
    the steps the mask is frozen at the top-``k`` scores (exactly the target) and
    only the weights train.
    Returns a :class:`SparseResult` with top-1 on the test split (first ``eval_limit``).
    """
    from edgeprune.methods._train import top1

    if method not in ("rigl", "scl"):
        raise BadInput(f"unknown sparse training method {method!r} (rigl or scl)")
    if not 0.0 < sparsity < 1.0:
        raise BadInput(f"sparsity must be in (0, 1), got {sparsity}")
    if init not in ("magnitude", "random"):
        raise BadInput(f"init must be 'magnitude' or 'random', not {init!r}")
    model = model if inplace else copy.deepcopy(model)
    n_steps = steps if steps is not None else steps_for(data, epochs, batch_size, max_images)
    if n_steps < 1:
        raise BadInput("sparse training needs at least one step (raise epochs or steps)")
    layers = weight_layers(model, include_first, include_last)
    if not layers:
        raise BadInput("the model has no conv/linear weights to sparsify")
    loop = {"lr": lr, "batch_size": batch_size, "max_images": max_images, "seed": seed}
    gen = torch.Generator().manual_seed(seed)
    if method == "rigl":
        res = _rigl(model, data, layers, sparsity, n_steps, distribution, init, delta_t, alpha, end_fraction, gen, loop, ui)
    else:
        res = _scl(model, data, layers, sparsity, n_steps, score_lr, init_fraction, reg_weight, end_fraction, loop, ui)
    masks, losses, extra = res
    apply_masks(model, masks)
    model.eval()
    acc = top1(model, test_split(data), eval_limit) if data is not None else None
    layer_sp = {n: 1.0 - float(m.float().mean()) for n, m in masks.items()}
    return SparseResult(model, masks, method, sparsity, sparsity_of(masks), acc, n_steps, losses, layer_sp, extra,
                        [UNSTRUCTURED_NOTE])


def _rigl(model, data, layers, sparsity, n_steps, distribution, init, delta_t, alpha, end_fraction, gen, loop, ui):
    dens = layer_densities(layers, sparsity, distribution)
    masks = _random_masks(layers, dens, gen) if init == "random" else _magnitude_masks(layers, dens)
    apply_masks(model, masks)
    t_end = int(end_fraction * n_steps)
    moved = {"updates": 0, "connections_moved": 0}

    def before(step: int) -> None:
        if step > 0 and step % delta_t == 0 and step < t_end:
            f = rigl_drop_fraction(step, t_end, alpha)
            for n, m in layers.items():
                if m.weight.grad is None:
                    continue
                new, k = rigl_update(m.weight, m.weight.grad, masks[n], f)
                masks[n] = new
                moved["connections_moved"] += k
            moved["updates"] += 1
            apply_masks(model, masks)  # dropped weights to zero; grown ones are zero already
        for n, m in layers.items():
            if m.weight.grad is not None:
                m.weight.grad.mul_(masks[n].to(m.weight.grad.dtype))

    ui.log(f"RigL: {n_steps} steps, sparsity {sparsity:.2f} ({distribution}), update every {delta_t} steps until step {t_end}")
    res = sgd_loop(model, data, n_steps, before_step=before, after_step=lambda _: apply_masks(model, masks), **loop)
    return masks, res.losses, {"distribution": distribution, "delta_t": delta_t, "alpha": alpha, **moved}


def _scl(model, data, layers, sparsity, n_steps, score_lr, init_fraction, reg_weight, end_fraction, loop, ui):
    from torch.nn.utils import parametrize

    total = sum(m.weight.numel() for m in layers.values())
    target_density = 1.0 - sparsity
    # initial scores: (|w| - q) / spread, q the magnitude quantile masking init_fraction of the target sparsity
    allw = torch.cat([(m.weight.detach().abs() / m.weight.detach().abs().mean().clamp_min(1e-12)).flatten() for m in layers.values()])
    q = float(torch.quantile(allw[torch.randperm(len(allw))[:200000]], min(0.999, sparsity * init_fraction)))
    spread = float(allw.std().clamp_min(1e-12))
    params_s = []
    for m in layers.values():
        rel = m.weight.detach().abs() / m.weight.detach().abs().mean().clamp_min(1e-12)
        p = _MaskedWeight((rel - q) / spread)
        parametrize.register_parametrization(m, "weight", p)
        params_s.append(p.scores)
    score_ids = {id(p) for p in params_s}
    weights = [p for p in model.parameters() if id(p) not in score_ids and p.requires_grad]
    adam = torch.optim.Adam(params_s, lr=score_lr)
    state = {"lambda": 0.0, "density": 1.0}
    history: list[float] = []

    freeze_at = int(end_fraction * n_steps)

    def topk_masks() -> dict[str, torch.Tensor]:
        flat = torch.cat([p.detach().flatten() for p in params_s])
        k = round(target_density * total)
        keep = torch.zeros(len(flat), dtype=torch.bool)
        keep[torch.argsort(flat, descending=True, stable=True)[:k]] = True
        out, i = {}, 0
        for n, p in zip(layers, params_s):
            out[n] = keep[i : i + p.numel()].view_as(p).clone()
            i += p.numel()
        return out

    def before(step: int) -> None:
        if step == freeze_at:
            # from here the mask is the top-k scores at exactly the target; weights keep training
            state["learned_sparsity"] = 1.0 - sum(int((p > 0).sum()) for p in params_s) / total
            with torch.no_grad():
                for p, m in zip(params_s, topk_masks().values()):
                    p.copy_(torch.where(m, 1.0, -1.0))
        if step >= freeze_at:
            for p in params_s:
                p.grad = None
            return
        on = sum(int((p > 0).sum()) for p in params_s)
        state["density"] = on / total
        # the regulariser's weight grows with the excess density and vanishes at the target, so the
        # learned density settles just above it instead of collapsing (Adam would follow any constant push)
        state["lambda"] = reg_weight * max(0.0, state["density"] / target_density - 1.0)
        for p in params_s:
            if p.grad is None:
                continue
            g = p.grad
            g.div_(g.pow(2).mean().sqrt().clamp_min(1e-12))  # per-layer mask-gradient normalisation
            g.add_(state["lambda"])  # d(connections)/ds through the identity STE, scaled by lambda
        if step % max(1, n_steps // 10) == 0:
            history.append(state["density"])

    ui.log(f"SCL: {n_steps} steps, target sparsity {sparsity:.2f}")
    try:
        res = sgd_loop(model, data, n_steps, params=weights, before_step=before, extra_optimizer=adam, **loop)
        learned = state.get("learned_sparsity", 1.0 - sum(int((p > 0).sum()) for p in params_s) / total)
        masks = topk_masks()
    finally:
        for m in layers.values():
            if parametrize.is_parametrized(m, "weight"):
                # back to the raw weights; the final mask is applied below
                parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)
    return masks, res.losses, {"learned_sparsity": learned, "final_lambda": state["lambda"], "density_history": history}


__all__ = ["SparseResult", "layer_densities", "rigl_drop_fraction", "rigl_update", "train_sparse"]
