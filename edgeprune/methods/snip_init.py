"""SNIP: single-shot pruning of connections at initialisation.

Paper: Lee, Ajanthan & Torr 2019, *SNIP: Single-shot Network Pruning based on
Connection Sensitivity* (ICLR). Before any training, every connection gets
the sensitivity ``|dL/dw * w|`` (the loss change if the connection were
removed, to first order, through a multiplicative mask ``c``: ``|dL/dc|`` at
``c = 1``), computed on one batch and normalised over the network; the top
``keep`` fraction is kept and the sparse network is trained normally.

When to use it: there is no trained model yet and a training budget: the
sparse topology is chosen before training, with no prune/retrain schedule.
On a *trained* model, use the per-channel ``snip`` importance criterion
(``edgeprune importance --criterion snip``) or magnitude pruning instead.
The sparsity is unstructured: on dense engines it changes stored bytes, not
latency.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgeprune.errors import BadInput
from edgeprune.methods._train import UNSTRUCTURED_NOTE, apply_masks, sparsity_of, weight_layers


def connection_sensitivity(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                           layers: Mapping[str, nn.Module] | None = None) -> dict[str, torch.Tensor]:
    """``|g * w|`` per weight of every conv/linear layer, normalised to sum to 1 over the network (one batch)."""
    names = list(layers) if layers is not None else list(weight_layers(model))
    # a copy: at initialisation BN has no statistics yet, so the batch's are used (train mode, as SNIP does),
    # and the model's own running statistics must not move
    work = copy.deepcopy(model).train()
    mods = dict(work.named_modules())
    loss = F.cross_entropy(work(x), y)
    grads = torch.autograd.grad(loss, [mods[n].weight for n in names])
    sens = {n: (g * mods[n].weight.detach()).abs() for n, g in zip(names, grads)}
    total = sum(float(s.sum()) for s in sens.values())
    if not total > 0:
        raise BadInput("all connection sensitivities are zero (is the loss constant on this batch?)")
    return {n: s / total for n, s in sens.items()}


def snip_masks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, keep: float,
               layers: Mapping[str, nn.Module] | None = None) -> dict[str, torch.Tensor]:
    """Keep-masks with exactly ``round(keep * total)`` connections: the most sensitive over the whole network."""
    keep = float(keep)
    if not 0.0 < keep <= 1.0:
        raise BadInput(f"keep fraction must be in (0, 1], got {keep}")
    sens = connection_sensitivity(model, x, y, layers)
    flat = torch.cat([s.flatten() for s in sens.values()])
    k = round(keep * flat.numel())
    chosen = torch.zeros(flat.numel(), dtype=torch.bool)
    chosen[torch.argsort(flat, descending=True, stable=True)[:k]] = True
    out, i = {}, 0
    for n, s in sens.items():
        out[n] = chosen[i : i + s.numel()].view_as(s).clone()
        i += s.numel()
    return out


def random_masks(model: nn.Module, keep: float, seed: int = 0, layers: Mapping[str, nn.Module] | None = None) -> dict[str, torch.Tensor]:
    """The baseline: the same number of connections, chosen uniformly at random over the network."""
    layers = dict(layers) if layers is not None else weight_layers(model)
    total = sum(m.weight.numel() for m in layers.values())
    k = round(float(keep) * total)
    chosen = torch.zeros(total, dtype=torch.bool)
    chosen[torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:k]] = True
    out, i = {}, 0
    for n, m in layers.items():
        out[n] = chosen[i : i + m.weight.numel()].view_as(m.weight).clone()
        i += m.weight.numel()
    return out


def snip_prune(model: nn.Module, data: Any, keep: float = 0.1, batch_size: int = 128, seed: int = 0,
               inplace: bool = False) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """Prune ``model`` (at initialisation) to the ``keep`` fraction of its conv/linear weights by SNIP.

    ``data``: a Dataset/ImageSet (one shuffled batch of ``batch_size`` train images
    is used, balanced as the data is) or an ``(x, y)`` batch. Returns the masked
    model and the masks (train it with the masks fixed, e.g.
    :func:`train_masked`).
    """
    from edgeprune.methods._train import batches_forever, train_split

    if isinstance(data, tuple):
        x, y = data
    else:
        import numpy as np

        x, y = next(iter(batches_forever(train_split(data), batch_size, np.random.default_rng(seed), augment=False)))
    model = model if inplace else copy.deepcopy(model)
    masks = snip_masks(model, x, y, keep)
    apply_masks(model, masks)
    return model, masks


def train_masked(model: nn.Module, data: Any, masks: Mapping[str, torch.Tensor], steps: int, **loop: Any) -> nn.Module:
    """Train with the masks fixed (masked gradients zeroed, masks re-applied each step); in place."""
    from edgeprune.methods.deep_compression import retrain_masked

    retrain_masked(model, data, masks, steps, **loop)
    return model


def snip_vs_random(model: nn.Module, data: Any, keep: float = 0.05, steps: int = 200, eval_limit: int | None = None,
                   seed: int = 0, **loop: Any) -> dict[str, Any]:
    """Train SNIP-masked and randomly masked copies of ``model`` (at init) for ``steps``; top-1 of both."""
    from edgeprune.methods._train import test_split, top1

    snip_model, snip_m = snip_prune(model, data, keep, seed=seed)
    rand_model = copy.deepcopy(model)
    rand_m = random_masks(rand_model, keep, seed)
    apply_masks(rand_model, rand_m)
    out: dict[str, Any] = {"keep": keep, "steps": steps, "note": UNSTRUCTURED_NOTE}
    for name, m, masks in (("snip", snip_model, snip_m), ("random", rand_model, rand_m)):
        train_masked(m, data, masks, steps, seed=seed, **loop)
        out[name] = {"top1": top1(m, test_split(data), eval_limit), "sparsity": sparsity_of(masks),
                     "layer_density": {n: float(v.float().mean()) for n, v in masks.items()}}
    return out


__all__ = ["connection_sensitivity", "random_masks", "snip_masks", "snip_prune", "snip_vs_random", "train_masked"]
