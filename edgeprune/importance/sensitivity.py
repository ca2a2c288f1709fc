"""Per-layer sensitivities for the planner and mixed precision: Hessian trace, spectral radius, gradient redundancy."""
from __future__ import annotations

from typing import Any

from torch import nn

SENSITIVITIES = ("hessian-trace", "spectral-radius", "gradient-redundancy")


def layer_sensitivity(model: nn.Module, data: Any, kind: str = "hessian-trace", graph: Any = None, batches: int = 4,
                      batch_size: int = 64, seed: int = 0, **options: Any) -> dict[str, float]:
    """{layer name: value} for every conv/linear layer (producers for ``gradient-redundancy``).

    - ``hessian-trace``: Hutchinson estimate of the trace of the layer weight's
      Hessian block (higher = more sensitive to any perturbation: pruning or
      quantisation noise of a given energy costs about 0.5 * trace/n per unit).
    - ``spectral-radius``: the block's largest |eigenvalue| by power iteration
      (the worst-case curvature, "Hessian-aware" pruning and quantisation).
    - ``gradient-redundancy``: 1 - effective rank / channels of the layer's
      per-sample gradient matrix on its output channels (higher = more of
      the layer's channels can go).
    """
    from edgeprune.errors import BadInput
    from edgeprune.importance import _batches

    if kind not in SENSITIVITIES:
        raise BadInput(f"unknown layer sensitivity {kind!r} (known: {', '.join(SENSITIVITIES)})")
    batch_list = _batches(data, batches, batch_size)
    if not batch_list:
        raise BadInput(f"layer sensitivity {kind!r} needs data")
    model = model.eval()
    if kind == "hessian-trace":
        from edgeprune.importance.hessian import hessian_trace

        return hessian_trace(model, batch_list, seed=seed, **options)
    if kind == "spectral-radius":
        from edgeprune.importance.hessian import spectral_radius

        return spectral_radius(model, batch_list, seed=seed, **options)
    from edgeprune.graph import channel_groups
    from edgeprune.importance.redundancy import layer_redundancy

    if graph is None:
        graph = channel_groups(model, batch_list[0][0][:1])
    return layer_redundancy(model, graph, batch_list, **options)
