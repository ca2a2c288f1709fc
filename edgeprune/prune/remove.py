"""Physical channel removal: :func:`prune` returns a smaller model, not a masked one."""
from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeprune.errors import BadInput, UnsupportedLayer
from edgeprune.graph.analyse import channel_groups
from edgeprune.graph.example import example_input
from edgeprune.graph.model import ChannelGraph
from edgeprune.graph.trace import output_shapes, run_model
from edgeprune.prune.layers import apply_drops, fix_attributes


def prune(model: nn.Module, keep: Mapping[str, Sequence[int] | torch.Tensor], example_inputs: Any = None,
          graph: ChannelGraph | None = None) -> nn.Module:
    """A new model with only the ``keep[group_id]`` channels of each group: smaller tensors, not masks.

    Groups missing from ``keep`` stay whole; the input model is not modified.
    ``graph`` (from :func:`channel_groups` on this model) saves tracing again.
    A group with ``unit > 1`` keeps whole blocks of ``unit`` channels (grouped
    conv groups, attention heads). Asking to shrink an unprunable group, or a
    partial block, raises :class:`BadInput`; a layer that cannot be sliced
    correctly raises :class:`UnsupportedLayer` naming it. The pruned model is
    run once on the example input and must give the original output shape.
    """
    if graph is not None and example_inputs is None:
        example_inputs = graph.example_inputs
    if example_inputs is None:
        example_inputs = example_input(model)
    model = model.eval()
    if graph is None:
        graph = channel_groups(model, example_inputs)
    by_id = {g.id: g for g in graph.groups}
    drops: dict[tuple[str, str], set[int]] = {}
    kinds: dict[str, tuple[str, int]] = {}
    for gid, idx in keep.items():
        grp = by_id.get(gid)
        if grp is None:
            raise BadInput(f"unknown channel group {gid!r} (known: {', '.join(list(by_id)[:8])}...)")
        kept = sorted({int(i) for i in (idx.tolist() if isinstance(idx, torch.Tensor) else idx)})
        if not kept:
            raise BadInput(f"group {gid} would drop to zero channels")
        if kept[0] < 0 or kept[-1] >= grp.size:
            raise BadInput(f"group {gid}: kept index out of range 0..{grp.size - 1}")
        drop = np.array(sorted(set(range(grp.size)) - set(kept)), dtype=np.int64)
        if len(drop) == 0:
            continue
        if not grp.prunable:
            raise BadInput(f"group {gid} is not prunable: {grp.reason}")
        if grp.unit > 1 and not np.array_equal(np.unique(drop // grp.unit).repeat(grp.unit) * grp.unit
                                               + np.tile(np.arange(grp.unit), len(np.unique(drop // grp.unit))), drop):
            raise BadInput(f"group {gid} is pruned in whole blocks of {grp.unit} channels "
                           "(grouped-conv groups or attention heads); use ChannelGroup.expand_units")
        for sl in graph.plans[gid]:
            gone = sl.idx[np.isin(sl.roots, drop)]
            drops.setdefault((sl.name, sl.role), set()).update(int(i) for i in gone)
            kinds[sl.name] = (sl.kind, sl.pdim)
    ref = graph.output_shapes
    if ref is None:
        with torch.no_grad():
            ref = output_shapes(run_model(model, example_inputs))
    new = copy.deepcopy(model).eval()
    if drops:
        apply_drops(new, drops, kinds)
        fix_attributes(new)
        try:
            with torch.no_grad():
                out = run_model(new, example_inputs)
        except Exception as err:  # noqa: BLE001 - any failure of the pruned model: one-line user-facing error
            msg = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise UnsupportedLayer(f"the pruned model does not run ({msg}): some layer hard-codes a channel count "
                                   "edgeprune cannot update; leave its groups whole") from None
        if output_shapes(out) != ref:
            raise UnsupportedLayer(f"the pruned model's output shape changed ({ref} -> {output_shapes(out)})")
    return new
