"""Gradient-based Taylor criteria (Molchanov et al. 2017, 2019; Theis et al. 2018).

Two parametrisations of "remove channel c":

* on weights (``taylor``): zero every parameter the channel owns; the
  first-order loss change is ``-sum(g * w)`` over those parameters;
* on a channel mask (``taylor-activation``, ``taylor-2nd``, ``fisher``): scale
  each of the group's output points by ``m_c`` (see
  :func:`~edgeprune.importance.base.mask_points`); ``m_c = 0`` *is* removal,
  and ``dL/dm_c = sum(activation * gradient)`` over the points and positions.
"""
from __future__ import annotations

import torch
from torch import nn

from edgeprune.graph import ChannelGraph
from edgeprune.importance.base import (
    Scores,
    _run,
    check_finite_grad,
    checked_loss,
    criterion,
    group_members,
    group_sum,
    mask_gradients,
    member_channel_sum,
)


@criterion(
    "taylor",
    "first-order Taylor on weights, per group: (sum of g*w over the group's parameters)^2, summed over batches",
    needs_data=True,
    needs_grad=True,
    combine="sum",
    paper="Molchanov et al. 2019, Importance Estimation for Neural Network Pruning (CVPR)",
)
def taylor_weight(model: nn.Module, graph: ChannelGraph, batches: list, params: str = "all", **options) -> Scores:
    """Group Taylor: the squared first-order estimate of the loss change when a whole channel group is removed.

    Per batch, each channel's estimate is the sum of ``g * w`` over every
    parameter the channel owns in every layer of its group (``params="all"``:
    conv filters, BN scale and shift, consumer input slices; ``params="bn"``:
    only the BN scale and shift, the paper's "FO-BN" gate after BN, falling
    back to all parameters for groups without BN); the square is accumulated
    over batches (Molchanov et al. 2019, eq. 8 applied to coupled groups).
    Combination over the group's layers: sum inside the square.
    """
    model = model.eval()
    modules = dict(model.named_modules())
    acc: Scores = {g.id: torch.zeros(g.size, dtype=torch.float64) for g in graph.prunable}

    def gw(mod: nn.Module, name: str) -> torch.Tensor | None:
        p = getattr(mod, name, None)
        if not isinstance(p, torch.Tensor) or p.grad is None:
            return None
        check_finite_grad(p.grad, "taylor")
        return p.detach() * p.grad

    for x, y in batches:
        model.zero_grad(set_to_none=True)
        checked_loss(model, x, y, where="taylor").backward()
        for g in graph.prunable:
            total = torch.zeros(g.size, dtype=torch.float64)
            members = group_members(graph, modules, g)
            if params == "bn" and any(m.kind == "bn" for _, m in members):
                members = [(mod, m) for mod, m in members if m.kind == "bn"]
            for mod, mem in members:
                v = member_channel_sum(mod, mem, gw)
                if v is not None and v.numel() == g.size:
                    total += v.double()
            acc[g.id] += total**2
    model.zero_grad(set_to_none=True)
    return {k: v.float() for k, v in acc.items()}


@criterion(
    "taylor-activation",
    "first-order Taylor on activations: mean over samples of |mean over space of activation*gradient|, per channel",
    needs_data=True,
    needs_grad=True,
    combine="sum",
    paper="Molchanov et al. 2017, Pruning Convolutional Neural Networks for Resource Efficient Inference (ICLR)",
)
def taylor_activation(model: nn.Module, graph: ChannelGraph, batches: list, spatial: str = "mean", normalize: bool = False,
                      **options) -> Scores:
    """Molchanov 2017: ``Theta(c) = mean_n | mean_hw a * dL/da |`` on the channel's feature maps.

    The feature maps are the group's output points (each producer's output,
    after its BN; hooks on the modules); the per-point values are summed inside
    the absolute value (combine: sum), since removing the channel perturbs all
    of them at once. ``spatial="sum"`` uses the sum over positions instead of
    the mean (the unscaled first-order loss change, comparable across stages);
    ``normalize=True`` applies the paper's per-layer L2 normalisation.
    """
    points, z, pos = mask_gradients(model, graph, batches, where="taylor-activation")
    scale = {i: (1.0 / pos[i] if spatial == "mean" else 1.0) for i in z}
    per_group = group_sum(points, z, graph, scale)
    out: Scores = {}
    for g in graph.prunable:
        t = per_group.get(g.id)
        s = t.abs().mean(0) if t is not None else torch.zeros(g.size, dtype=torch.float64)
        if normalize:
            s = s / (s.norm() + 1e-12)
        out[g.id] = s.float()
    return out


@criterion(
    "taylor-2nd",
    "second-order Taylor on the channel mask: estimated loss increase -mean(g) + 0.5*Fisher (signed)",
    needs_data=True,
    needs_grad=True,
    combine="sum",
    paper="Molchanov et al. 2019, Importance Estimation for Neural Network Pruning (CVPR), second-order variant",
    signed=True,
)
def taylor_second(model: nn.Module, graph: ChannelGraph, batches: list, **options) -> Scores:
    """Estimated loss change of removing the channel (``delta m = -1``), to second order.

    ``dL = -mean_n z_nc + 0.5 * mean_n z_nc^2`` where ``z_nc`` is sample n's
    gradient w.r.t. the channel's mask (summed over the group's output points:
    combine sum) and the Hessian diagonal is replaced by the empirical Fisher,
    as Molchanov et al. 2019 do. Signed: a negative score means removing the
    channel lowered the loss on these batches.
    """
    points, z, _ = mask_gradients(model, graph, batches, where="taylor-2nd")
    per_group = group_sum(points, z, graph)
    out: Scores = {}
    for g in graph.prunable:
        t = per_group.get(g.id)
        out[g.id] = (-t.mean(0) + 0.5 * (t**2).mean(0)).float() if t is not None else torch.zeros(g.size)
    return out


@criterion(
    "fisher",
    "Fisher pruning: 0.5 * mean over samples of (d loss_n / d mask_c)^2, the empirical-Fisher loss increase",
    needs_data=True,
    needs_grad=True,
    combine="sum",
    paper="Theis et al. 2018, Faster gaze prediction with dense networks and Fisher pruning",
)
def fisher(model: nn.Module, graph: ChannelGraph, batches: list, **options) -> Scores:
    """``0.5 * mean_n (sum_points sum_hw a * g)^2``: the second-order term of removing the channel with H ~ Fisher.

    Per-sample gradients come for free from a per-sample mask (eval-mode BN keeps
    samples independent); a group's output points are summed before squaring.
    """
    points, z, _ = mask_gradients(model, graph, batches, where="fisher")
    per_group = group_sum(points, z, graph)
    return {g.id: (0.5 * (per_group[g.id] ** 2).mean(0)).float() if per_group.get(g.id) is not None else torch.zeros(g.size)
            for g in graph.prunable}


@criterion(
    "taylor-logit",
    "linearised network, exact loss: mean CE(z - J_c, y) - CE(z, y), J_c = d logits / d mask_c (signed; one backward per "
    "class up to 100 classes, above that label + top competitor columns only: 1000-class heads in < 2x fisher's time)",
    needs_data=True,
    needs_grad=True,
    combine="sum",
    paper="edgeprune's variant of Molchanov et al. 2019: Taylor-expand the logits, not the loss (cf. the Gauss-Newton view, Martens 2014)",
    signed=True,
)
def taylor_logit(model: nn.Module, graph: ChannelGraph, batches: list, max_classes: int = 100, competitors: int = 1,
                 **options) -> Scores:
    """Loss change of removing the channel with the network linearised and the loss kept exact.

    Per sample n, ``J_nc = d logits_n / d m_c`` (the channel's mask, summed over the
    group's output points, which removal zeroes together) comes from one backward
    per logit column with per-sample masks. Removal (``delta m = -1``) moves the logits to
    ``z_n - J_nc``; the score is ``mean_n CE(z_n - J_nc, y_n) - CE(z_n, y_n)``.
    The first-order Taylor of the loss (``taylor-activation``) and its
    Fisher-corrected second order (``taylor-2nd``) approximate exactly this
    quantity; keeping the softmax cross-entropy exact removes their error on
    confident samples, where one channel's removal moves logits by more than a
    quadratic can follow.

    Up to ``max_classes`` outputs every column is computed (one backward per class).
    Above it (ImageNet heads) only the columns that decide the cross-entropy are:
    per sample its label and its ``competitors`` highest-scoring other classes
    (one backward per column for the whole batch, since per-sample masks keep the
    samples apart); the other logits are held fixed, and they enter the exact
    log-sum-exp at their current values. With one competitor a batch costs a
    forward and two mask backwards, against fisher's forward and one backward.
    """
    from edgeprune.errors import BadInput
    from edgeprune.importance.base import Masker, mask_points

    model.eval()
    points = mask_points(model, graph)
    sizes = {g.id: g.size for g in graph.prunable}
    acc: Scores = {g.id: torch.zeros(g.size, dtype=torch.float64) for g in graph.prunable}
    seen = 0
    with Masker(model, points) as mk:
        for x, y in batches:
            masks = {i: torch.ones(x.shape[0], sizes[p.group], requires_grad=True) for i, p in enumerate(points)}
            mk.values = masks
            z = _run(model, x)
            if z.dim() != 2:
                raise BadInput(f"taylor-logit needs (batch, classes) logits, the model returns shape {tuple(z.shape)}")
            b, k = z.shape
            if not torch.isfinite(z).all():
                raise BadInput("importance taylor-logit: the logits are NaN/inf on this data (check the inputs and the model's weights)")
            if k <= max_classes:
                cols = torch.arange(k).expand(b, k)  # every class: exact
            else:
                if competitors < 1:
                    raise BadInput(f"taylor-logit: competitors must be at least 1, got {competitors}")
                others = z.detach().scatter(1, y[:, None], float("-inf"))
                cols = torch.cat([y[:, None], others.topk(min(competitors, k - 1), dim=1).indices], dim=1)
            m = cols.shape[1]
            jac: dict[str, torch.Tensor] = {}
            picked = z.gather(1, cols)  # (b, m): per sample its own columns
            for j in range(m):
                grads = torch.autograd.grad(picked[:, j].sum(), list(masks.values()), retain_graph=j < m - 1, allow_unused=True)
                for i, gr in zip(masks, grads):
                    if gr is None:
                        continue
                    check_finite_grad(gr, "taylor-logit")
                    gid = points[i].group
                    if gid not in jac:
                        jac[gid] = torch.zeros(b, sizes[gid], m, dtype=torch.float64)
                    jac[gid][:, :, j] += gr.detach().double()
            zd = z.detach().double()
            base = nn.functional.cross_entropy(zd, y, reduction="none")
            zc = zd.gather(1, cols)  # (b, m)
            rest = zd.scatter(1, cols, float("-inf")).logsumexp(1) if m < k else torch.full((b,), float("-inf"), dtype=zd.dtype)
            label = (cols == y[:, None]).double()  # (b, m): where each sample's label column is
            for gid, jm in jac.items():
                moved = zc[:, None, :] - jm  # (b, size, m)
                lse = torch.logaddexp(rest[:, None], moved.logsumexp(-1))
                loss = lse - (moved * label[:, None, :]).sum(-1)
                acc[gid] += (loss - base[:, None]).sum(0)
            seen += b
        mk.values = {}
    return {gid: (v / max(seen, 1)).float() for gid, v in acc.items()}
