"""Plan here, apply there: a plan.json that says what it was made for, read back and checked against a model, and
:func:`load_pruned`, which rebuilds a pruned model from its dense model, the plan and a state_dict (no unpickling).

A plan file is the planner's document (``edgeprune plan --out`` or ``compress``'s plan.json) with a ``source``
section: the edgeprune version, the model spec and its arguments, the input shape, every channel group's size, the
target(s) and the budget. The kept channels are ``keep`` (``{group: [indices]}``), or the ``groups`` of a
:class:`~edgeprune.plan.Plan`; precisions are ``precisions_by_target[target]``, else ``precisions``.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeprune.errors import BadInput


@dataclass
class PlanFile:
    """What applying a plan needs: kept channels per group, precisions, and what the plan was made for."""

    keep: dict[str, list[int]]
    precisions: dict[str, str] = field(default_factory=dict)
    precisions_by_target: dict[str, dict[str, str]] = field(default_factory=dict)
    group_sizes: dict[str, int] = field(default_factory=dict)  # every group of the dense model (empty: not recorded)
    input_shape: tuple[int, ...] | None = None
    model: str | None = None
    model_args: dict[str, Any] = field(default_factory=dict)
    budget: str = ""
    targets: list[str] = field(default_factory=list)
    version: str | None = None
    path: str = "plan"
    doc: dict[str, Any] = field(default_factory=dict)

    def precisions_for(self, target: str) -> dict[str, str]:
        """``{layer: precision}`` for ``target`` (the plan's only map when it has one)."""
        return dict(self.precisions_by_target.get(target, self.precisions))


def plan_source(model: str, model_args: Mapping[str, Any] | None, example: Any, graph: Any, targets: Sequence[str],
                budget: str) -> dict[str, Any]:
    """The ``source`` section of a plan file: enough to apply it elsewhere and to check it fits the model."""
    from edgeprune import __version__

    shape = list(example.shape) if isinstance(example, torch.Tensor) else None
    return {"edgeprune": __version__, "model": model, "model_args": dict(model_args or {}), "input_shape": shape,
            "groups": {g.id: g.size for g in graph.groups}, "targets": list(targets), "budget": budget}


def read_plan(plan: str | os.PathLike[str] | Mapping[str, Any]) -> PlanFile:
    """A plan file (or its parsed document) as a :class:`PlanFile`; a file that is no plan -> one-line error."""
    if isinstance(plan, Mapping):
        doc, where = dict(plan), "plan"
    else:
        from edgeprune.fileio import read_json

        doc, where = read_json(plan, "plan file"), str(plan)
    if not isinstance(doc, dict) or not ("keep" in doc or isinstance(doc.get("groups"), dict)):
        raise BadInput(f"{where} is not an edgeprune plan (no 'keep' or 'groups'): write one with "
                       "edgeprune plan --out plan.json, or use compress's plan.json")
    try:
        if "keep" in doc:
            keep = {str(g): [int(i) for i in idx] for g, idx in doc["keep"].items()}
        else:
            keep = {gid: [int(i) for i in g["indices"]] for gid, g in doc["groups"].items() if g["kept"] < g["size"]}
        src = doc.get("source") or {}
        sizes = {str(g): int(n) for g, n in (src.get("groups") or {}).items()}
        if not sizes and isinstance(doc.get("groups"), dict):  # a plan without source: its groups still say their size
            sizes = {gid: int(g["size"]) for gid, g in doc["groups"].items()}
        shape = tuple(int(v) for v in src["input_shape"]) if src.get("input_shape") else None
    except (AttributeError, KeyError, TypeError, ValueError) as err:
        raise BadInput(f"{where}: malformed plan ({type(err).__name__}: {err})") from None
    return PlanFile(keep=keep, precisions=dict(doc.get("precisions") or {}),
                    precisions_by_target={t: dict(m) for t, m in (doc.get("precisions_by_target") or {}).items()},
                    group_sizes=sizes, input_shape=shape, model=src.get("model") or doc.get("model") or None,
                    model_args=dict(src.get("model_args") or {}), budget=str(src.get("budget") or doc.get("budget") or ""),
                    targets=list(src.get("targets") or doc.get("targets") or []), version=src.get("edgeprune"),
                    path=where, doc=doc)


def check_plan(plan: PlanFile, graph: Any) -> None:
    """A one-line :class:`BadInput` when ``plan`` was made for another model (other groups or channel counts)."""
    sizes = {g.id: g.size for g in graph.groups}
    prunable = {g.id for g in graph.prunable}
    where = f"plan {plan.path} does not match the model"
    if plan.group_sizes:
        missing = sorted(set(plan.group_sizes) - set(sizes))
        extra = sorted(set(sizes) - set(plan.group_sizes))
        if missing or extra:
            parts = ([f"groups not in the model: {', '.join(missing[:3])}"] if missing else []) + \
                    ([f"model groups not in the plan: {', '.join(extra[:3])}"] if extra else [])
            raise BadInput(f"{where}: {'; '.join(parts)} (made for {plan.model or 'another model'}?)")
        other = [f"{g} has {n} channels in the plan, {sizes[g]} in the model" for g, n in plan.group_sizes.items()
                 if sizes[g] != n]
        if other:
            raise BadInput(f"{where}: {'; '.join(other[:2])}{' ...' if len(other) > 2 else ''}")
    for gid, idx in plan.keep.items():
        if gid not in sizes:
            raise BadInput(f"{where}: it keeps channels of group {gid!r}, which the model does not have")
        if gid not in prunable:
            raise BadInput(f"{where}: it prunes group {gid!r}, which is not prunable here ({graph.group(gid).reason})")
        if idx and (min(idx) < 0 or max(idx) >= sizes[gid]):
            raise BadInput(f"{where}: group {gid} has {sizes[gid]} channels, the plan keeps index {max(idx)}")


def _example(plan: PlanFile, example_inputs: Any) -> Any:
    if example_inputs is not None:
        return example_inputs
    if plan.input_shape is None:
        raise BadInput(f"plan {plan.path} records no input shape: pass example_inputs")
    return torch.zeros(plan.input_shape)


def load_pruned(dense_model: nn.Module | str, plan: str | os.PathLike[str] | Mapping[str, Any] | PlanFile,
                weights: str | os.PathLike[str] | Mapping[str, torch.Tensor] | None = None, *,
                example_inputs: Any = None) -> nn.Module:
    """The pruned model of ``plan`` rebuilt from ``dense_model`` (the same architecture, any weights), with
    ``weights`` (a state_dict file such as compress's weights.pt) loaded into it, in eval mode.

    Nothing is unpickled: the architecture comes from the dense model and the plan, the tensors from
    ``torch.load(weights_only=True)``. A plan made for another model, or weights of other shapes, give a one-line
    :class:`BadInput`. ``example_inputs`` defaults to zeros of the plan's input shape.
    """
    from edgeprune.graph import channel_groups
    from edgeprune.models.user import load_model, load_weights
    from edgeprune.prune import prune

    p = plan if isinstance(plan, PlanFile) else read_plan(plan)
    dense = load_model(dense_model, pretrained=False, args=p.model_args if isinstance(dense_model, str) else None)
    example = _example(p, example_inputs)
    graph = channel_groups(dense, example)
    check_plan(p, graph)
    small = prune(dense, p.keep, example, graph=graph)
    if weights is not None:
        load_weights(small, weights)
    return small.eval()


def write_plan(path: str | os.PathLike[str], doc: Mapping[str, Any], source: Mapping[str, Any]) -> Path:
    """Write a plan document with its ``source`` section, atomically."""
    from edgeprune.fileio import write_json

    return write_json(path, {**doc, "source": dict(source)})


__all__ = ["PlanFile", "check_plan", "load_pruned", "plan_source", "read_plan", "write_plan"]
