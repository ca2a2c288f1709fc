"""Low-rank factorisation with energy transfer (LRPET-style).

Paper: Guo, Lin et al., *Compact Model Training by Low-Rank Projection with
Energy Transfer* (LRPET; code github.com/BZQLin/LRPET). The classic
factorisation is Jaderberg et al. 2014 / Zhang et al. 2016: a ``k x k`` conv
``C_in -> C_out`` becomes a ``k x k`` conv ``C_in -> r`` followed by a ``1 x 1``
conv ``r -> C_out``, from the truncated SVD of the weight reshaped to
``C_out x (C_in k k)``.

When to use it: wide layers whose weight spectrum decays fast (late stages,
classifier heads). Unlike unstructured sparsity the result is two *dense*
layers, so every dense engine runs it faster when ``r`` is small enough:
``r < C_in k^2 C_out / (C_in k^2 + C_out)`` for fewer MACs, and the profiler
says whether the target agrees (two launches, a thin intermediate tensor).

Energy transfer (LRPET): truncation removes the energy (sum of squared
singular values) of the dropped directions; LRPET gives it back to the kept
ones so the layer's output energy is preserved: ``"uniform"`` adds the
dropped energy in equal shares (``s_i'^2 = s_i^2 + E_dropped / r``, the
paper's wording), ``"scale"`` multiplies every kept value by
``sqrt(E_total / E_kept)``. Per layer, plain truncation is the least-squares
optimum (Eckart-Young), so energy transfer always has a *larger* error on
that layer's raw output; what it keeps is the activation scale the next
BatchNorm (with its running statistics) and the rest of the network expect,
and the gradient magnitude during training (the paper's argument). The
tests and the benchmark measure both effects.

LRPET's training (``lrpet_train``): alternate SGD on the dense weights with a
projection onto rank ``r`` (with energy transfer) every few steps, then
factorise; the solution space stays Euclidean between projections.

How a planner prices a rank choice: a rank ``r`` for layer ``L`` is exactly
a channel count for a new inner channel group between the two thin layers.
:func:`rank_options` returns, per candidate rank, the two
:class:`~edgeprune.graph.LayerSignature` objects (``k x k, C_in -> r`` with no
fused post-op; ``1 x 1, r -> C_out`` with the original's fused BN/add/ReLU),
their cost from a profile predictor, a measurement or MACs, and the share
of spectral energy kept (the analogue of retained importance). A
multiple-choice knapsack adds one item set per factorisable layer: "keep
dense" (cost of the original signature, energy 1) or one of the ranks (cost
of the two signatures, energy kept) -- the same shape as a channel-count
choice for a group, so the exact planner takes it unchanged. After
:func:`factorize`, ``channel_groups`` sees the inner group (size ``r``) like
any other, so channel pruning can shrink it further.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from edgeprune.errors import BadInput
from edgeprune.graph.signature import LayerSignature

TRANSFERS = ("none", "uniform", "scale")


def _matrix(layer: nn.Module) -> torch.Tensor:
    if isinstance(layer, nn.Conv2d):
        if layer.groups != 1:
            raise BadInput(f"cannot factorise a grouped/depthwise conv (groups={layer.groups})")
        return layer.weight.detach().reshape(layer.out_channels, -1).double()
    if isinstance(layer, nn.Linear):
        return layer.weight.detach().double()
    raise BadInput(f"low-rank factorisation takes Conv2d or Linear layers, not {type(layer).__name__}")


def full_rank(layer: nn.Module) -> int:
    """The largest useful rank: min(C_out, C_in k k)."""
    w = _matrix(layer)
    return int(min(w.shape))


def transfer_energy(s: torch.Tensor, rank: int, energy_transfer: str = "uniform") -> torch.Tensor:
    """The kept singular values ``s[:rank]`` after energy transfer (see the module docstring)."""
    if energy_transfer not in TRANSFERS:
        raise BadInput(f"energy_transfer must be one of {', '.join(TRANSFERS)}, not {energy_transfer!r}")
    kept = s[:rank].clone()
    dropped = float((s[rank:] ** 2).sum())
    if energy_transfer == "none" or dropped == 0.0 or rank == 0:
        return kept
    if energy_transfer == "uniform":
        return torch.sqrt(kept**2 + dropped / rank)
    total = float((s**2).sum())
    return kept * (total / max(float((kept**2).sum()), 1e-300)) ** 0.5


def svd_factors(layer: nn.Module, rank: int, energy_transfer: str = "uniform") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(A, B, s)``: ``B @ A`` is the rank-``rank`` approximation of the layer's weight matrix
    (``A``: r x C_in k k, ``B``: C_out x r, the singular values split evenly as sqrt), and ``s`` all singular values."""
    w = _matrix(layer)
    if rank < 1:
        raise BadInput(f"rank must be >= 1, got {rank}")
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    r = min(rank, len(s))
    sk = transfer_energy(s, r, energy_transfer).sqrt()
    a = sk[:, None] * vh[:r]
    b = u[:, :r] * sk[None, :]
    return a, b, s


def energy_kept(layer: nn.Module, rank: int) -> float:
    """Share of the weight's spectral energy in its top ``rank`` singular values."""
    s = torch.linalg.svdvals(_matrix(layer))
    return float((s[:rank] ** 2).sum() / (s**2).sum().clamp_min(1e-300))


def factorized_layer(layer: nn.Module, rank: int, energy_transfer: str = "uniform") -> nn.Sequential:
    """Two thin layers (``[0]``: k x k C_in -> r, no bias; ``[1]``: 1 x 1 r -> C_out with the bias) replacing ``layer``."""
    a, b, _ = svd_factors(layer, rank, energy_transfer)
    r = a.shape[0]
    dtype = layer.weight.dtype
    if isinstance(layer, nn.Conv2d):
        first = nn.Conv2d(layer.in_channels, r, layer.kernel_size, layer.stride, layer.padding, layer.dilation,
                          bias=False, padding_mode=layer.padding_mode)
        second = nn.Conv2d(r, layer.out_channels, 1, bias=layer.bias is not None)
        first.weight.data = a.reshape(r, layer.in_channels, *layer.kernel_size).to(dtype).contiguous()
        second.weight.data = b.reshape(layer.out_channels, r, 1, 1).to(dtype).contiguous()
    else:
        first = nn.Linear(layer.in_features, r, bias=False)
        second = nn.Linear(r, layer.out_features, bias=layer.bias is not None)
        first.weight.data = a.to(dtype).contiguous()
        second.weight.data = b.to(dtype).contiguous()
    if layer.bias is not None:
        second.bias.data = layer.bias.detach().clone()
    return nn.Sequential(first, second)


def _set(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)


def factorize(model: nn.Module, ranks: Mapping[str, int], energy_transfer: str = "uniform") -> nn.Module:
    """A copy of ``model`` with each ``ranks`` layer replaced by its two-layer rank-``r`` factorisation.

    At ``r = min(C_out, C_in k k)`` (or above) the result computes the same function
    (up to float rounding). The input model is not modified.
    """
    new = copy.deepcopy(model)
    mods = dict(new.named_modules())
    for name, r in ranks.items():
        if name not in mods:
            raise BadInput(f"unknown layer {name!r}")
        _set(new, name, factorized_layer(mods[name], int(r), energy_transfer))
    return new.eval()


@torch.no_grad()
def project_(model: nn.Module, ranks: Mapping[str, int], energy_transfer: str = "uniform") -> None:
    """LRPET's projection step: replace each layer's weight in place by its rank-``r`` approximation (shape kept)."""
    mods = dict(model.named_modules())
    for name, r in ranks.items():
        m = mods[name]
        a, b, _ = svd_factors(m, int(r), energy_transfer)
        m.weight.copy_((b @ a).reshape(m.weight.shape).to(m.weight.dtype))


def lrpet_train(model: nn.Module, data: Any, ranks: Mapping[str, int], steps: int, project_every: int = 20,
                energy_transfer: str = "uniform", **loop: Any) -> nn.Module:
    """LRPET: SGD with a projection onto rank ``r`` every ``project_every`` steps, then :func:`factorize`.

    ``model`` is trained in place; the factorised copy is returned. ``loop`` goes to
    :func:`edgeprune.methods._train.sgd_loop` (lr, batch_size, max_images, seed, ...).
    """
    from edgeprune.methods._train import sgd_loop

    project_(model, ranks, energy_transfer)

    def after(step: int) -> None:
        if (step + 1) % project_every == 0:
            project_(model, ranks, energy_transfer)

    sgd_loop(model, data, steps, after_step=after, **loop)
    return factorize(model, ranks, energy_transfer)


# --------------------------------------------------------------------------- pricing ranks for a planner


def rank_signatures(sig: LayerSignature, rank: int) -> tuple[LayerSignature, LayerSignature]:
    """The two layers a rank-``rank`` factorisation of ``sig`` runs (what the profiler prices)."""
    if sig.op == "linear":
        return (replace(sig, out_channels=rank, post=""), replace(sig, in_channels=rank))
    if sig.groups not in (1,):
        raise BadInput("cannot factorise a grouped/depthwise conv")
    first = replace(sig, out_channels=rank, post="")
    second = LayerSignature("conv2d", rank, sig.out_channels, (1, 1), (1, 1), (0, 0), 1, sig.out_hw, sig.dtype, sig.post)
    return first, second


@dataclass
class RankOption:
    """One planner option for a layer: dense (``rank`` None) or a rank with its two signatures."""

    layer: str
    rank: int | None
    signatures: list[LayerSignature]
    macs: int
    params: int
    energy: float  # share of spectral energy kept (1 for dense)
    cost: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly."""
        return {"layer": self.layer, "rank": self.rank, "signatures": [s.key() for s in self.signatures],
                "macs": self.macs, "params": self.params, "energy": self.energy, "cost": self.cost}


def _params(sig: LayerSignature) -> int:
    g = sig.in_channels if sig.groups == -1 else sig.groups
    return sig.out_channels * (sig.in_channels // max(g, 1)) * sig.kernel[0] * sig.kernel[1]


def macs_cost(sig: LayerSignature) -> float:
    """Cost = millions of MACs (what a planner falls back to with no profile)."""
    return sig.macs / 1e6


def predictor_cost(predictor: Any) -> Callable[[LayerSignature], float]:
    """Cost from a profile predictor (``Profile.predictor()``); the factorised shapes must be profiled."""

    def cost(sig: LayerSignature) -> float:
        if not predictor.has(sig):
            raise BadInput(f"the profile has no table for {sig.key()}: measure the factorised shapes "
                           "(lowrank.measured_cost(target)) or add them to the profile grid")
        return float(predictor.layer_cost(sig))

    return cost


def measured_cost(target: Any) -> Callable[[LayerSignature], float]:
    """Cost measured on ``target`` (a Target or its name) with the profiler's per-layer protocol (median)."""
    from edgeprune.backends import get_backend
    from edgeprune.config import get_target
    from edgeprune.profile.profiler import LAYER_PROTOCOL

    tgt = get_target(target) if isinstance(target, str) else target
    backend = get_backend(tgt.backend)
    cache: dict[str, float] = {}

    def cost(sig: LayerSignature) -> float:
        k = sig.key()
        if k not in cache:
            cache[k] = float(backend.time_layer(sig, tgt, LAYER_PROTOCOL).median)
        return cache[k]

    return cost


def default_ranks(full: int, multiple: int = 8) -> list[int]:
    """Candidate ranks: multiples of ``multiple`` below ``full`` (and ``full // 2``, ``full // 4``)."""
    cands = set(range(multiple, full, multiple)) | {max(1, full // 2), max(1, full // 4)}
    return sorted(c for c in cands if 1 <= c < full)


def rank_options(model: nn.Module, layers: Sequence[str] | None = None, ranks: Mapping[str, Sequence[int]] | Sequence[int] | None = None,
                 cost: Callable[[LayerSignature], float] | None = macs_cost, example: Any = None,
                 multiple: int = 8) -> dict[str, list[RankOption]]:
    """Per factorisable layer, the dense option and one option per candidate rank (see the module docstring).

    ``cost`` prices a signature (:func:`macs_cost`, :func:`predictor_cost`,
    :func:`measured_cost`, or None to leave ``cost`` unset); an option's cost is
    the sum over its signatures. Ranks that would cost more MACs than the dense
    layer are left out.
    """
    from edgeprune.graph import channel_groups, example_input

    example = example if example is not None else example_input(model)
    graph = channel_groups(model, example)
    mods = dict(model.named_modules())
    names = list(layers) if layers is not None else [
        n for n, info in graph.layers.items()
        if isinstance(mods[n], (nn.Conv2d, nn.Linear)) and info.signature.groups == 1 and full_rank(mods[n]) > 1]
    out: dict[str, list[RankOption]] = {}
    for name in names:
        info = graph.layers.get(name)
        if info is None:
            raise BadInput(f"layer {name!r} is not a conv/linear layer of the model")
        sig = info.signature
        layer = mods[name]
        s = torch.linalg.svdvals(_matrix(layer))
        energy = (s**2).cumsum(0) / (s**2).sum().clamp_min(1e-300)
        full = len(s)
        cands = ranks.get(name) if isinstance(ranks, Mapping) else ranks
        cands = sorted({int(r) for r in (cands if cands is not None else default_ranks(full, multiple)) if 1 <= int(r) < full})
        dense = RankOption(name, None, [sig], sig.macs, _params(sig), 1.0)
        opts = [dense]
        for r in cands:
            a, b = rank_signatures(sig, r)
            macs = a.macs + b.macs
            if macs >= sig.macs:
                continue
            opts.append(RankOption(name, r, [a, b], macs, _params(a) + _params(b), float(energy[r - 1])))
        if cost is not None:
            for o in opts:
                o.cost = float(sum(cost(sg) for sg in o.signatures))
        out[name] = opts
    return out


__all__ = [
    "RankOption", "default_ranks", "energy_kept", "factorize", "factorized_layer", "full_rank", "lrpet_train",
    "macs_cost", "measured_cost", "predictor_cost", "project_", "rank_options", "rank_signatures", "svd_factors",
    "transfer_energy",
]
