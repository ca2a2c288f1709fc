"""ONNX node names <-> PyTorch layer (module) names, and the warning class of this package.

The TorchScript exporter names a node ``/<scope>/<scope>/.../<Op>``, one scope per
module *call*, each scope being the module's qualified name cut at its last
non-numeric atom (torch.onnx ``_unqualified_variable_name``): module
``features.1.conv.0.0`` of a torchvision MobileNetV2 is the scope chain
``features / features.1 / conv / conv.0 / conv.0.0``. A scope therefore repeats
the tail of its parent's path, by as many atoms as it has minus one (``conv.0.0``
under ``...conv.0``), or extends it outright (a child name, or an item of a
ModuleList that is never called itself: ``blocks.0`` under ``stage``). Where both
readings are possible, a set of known module names (the model's, or the names a
caller looks for) decides. The dynamo exporter records the full scope chain in the
node's ``pkg.torch.onnx.name_scopes`` metadata, whose last module entry is already
the full path.
"""
from __future__ import annotations

import ast
import contextlib
from collections.abc import Collection, Iterable, Iterator
from typing import Any

from edgeprune.errors import BadInput, InternalError


class QuantWarning(UserWarning):
    """Something about a quantisation the user should know (few calibration samples, an op kept fp32, ...)."""


class UnmatchedLayers(BadInput):
    """Layer names (an ``exclude`` list) that match no node of an ONNX graph.

    From a user this is bad input; from a plan of the same model it is a bug, and the
    pipeline re-raises it as :class:`edgeprune.errors.InternalError`.
    """

    def __init__(self, message: str, names: list[str]) -> None:
        super().__init__(message)
        self.names = names


def _candidates(path: list[str], seg: list[str]) -> list[list[str]]:
    """The module paths scope ``seg`` may stand for under ``path``, most likely first (see the module doc)."""
    out = []
    for k in range(len(seg) - 1, -1, -1):  # overlap k atoms with the parent's tail; k == len(seg) would be the parent
        if k == 0 or (k <= len(path) and path[len(path) - k :] == seg[:k]):
            out.append(path[: len(path) - k] + seg)
    return out


def scope_path(scopes: Iterable[str], known: Collection[str] | None = None) -> str | None:
    """The module path of a chain of TorchScript scope names (``["features", "features.1", "conv", "conv.1"]``), or None.

    ``known``: module names (or any superset of the path's prefixes) that settle an
    ambiguous scope; without it the most likely reading is taken.
    """
    path: list[str] = []
    for scope in scopes:
        seg = [a for a in scope.split(".") if a]
        if not seg:
            continue
        cands = _candidates(path, seg)
        if known:
            cands = [c for c in cands if ".".join(c) in known] or cands
        path = cands[0]
    return ".".join(path) or None


def module_path(node_name: str, known: Collection[str] | None = None) -> str | None:
    """The PyTorch module path of an ONNX node name from the TorchScript exporter, or None.

    ``/layer1/layer1.0/conv1/Conv`` -> ``layer1.0.conv1``;
    ``/features/features.1/conv/conv.1/Conv`` -> ``features.1.conv.1``; ``/Relu`` -> None
    (no module). Suffixes that ORT adds when it rewrites nodes (``Conv_token_6``,
    ``..._nchwc``) live in the last segment, which is dropped. ``known``: see
    :func:`scope_path`.
    """
    if not node_name.startswith("/") or node_name.count("/") < 2:
        return None
    return scope_path([p for p in node_name.split("/") if p][:-1], known)


def _dynamo_scope(node: Any) -> str | None:
    for prop in getattr(node, "metadata_props", []):
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                return None
            if not isinstance(scopes, (list, tuple)):
                return None
            mods = [str(s) for s in scopes[:-1] if s]  # the last entry names the op; the others are full module paths
            return mods[-1] if mods else None
    return None


def layer_of_node(node: Any, known: Collection[str] | None = None) -> str | None:
    """The module name a node (``onnx.NodeProto``) belongs to, from its name or the dynamo exporter's metadata."""
    return module_path(node.name, known) or _dynamo_scope(node)


def prefixes(names: Iterable[str]) -> set[str]:
    """Every dotted prefix of every name (``a.b.c`` -> ``a``, ``a.b``, ``a.b.c``): module names known to exist."""
    out: set[str] = set()
    for name in names:
        atoms = name.split(".")
        out.update(".".join(atoms[: i + 1]) for i in range(len(atoms)))
    return out


def match_nodes(nodes: Iterable[Any], names: Iterable[str], known: Collection[str] | None = None) -> tuple[list[str], list[str]]:
    """ONNX node names selected by ``names`` (node names, or module names and their sub-modules), and the names that matched nothing.

    ``known``: the model's module names, when the caller has them; otherwise the
    wanted names and their prefixes settle ambiguous scopes (:func:`scope_path`).
    """
    nodes, names = list(nodes), list(names)
    known = known if known is not None else prefixes(names)
    layers = {id(n): layer_of_node(n, known) or "" for n in nodes}
    chosen: list[str] = []
    unmatched: list[str] = []
    for want in names:
        hit = False
        for n in nodes:
            layer = layers[id(n)]
            if n.name == want or layer == want or layer.startswith(want + "."):
                hit = True
                if n.name not in chosen:
                    chosen.append(n.name)
        if not hit:
            unmatched.append(want)
    return chosen, unmatched


@contextlib.contextmanager
def model_exclusions() -> Iterator[None]:
    """Around a quantisation whose ``exclude`` names come from the model itself (a plan's fp32 layers).

    A name that then matches no node is edgeprune's bug, not bad input: it is
    re-raised as :class:`edgeprune.errors.InternalError` (exit 3).
    """
    try:
        yield
    except UnmatchedLayers as err:
        raise InternalError(f"the plan's fp32 layers do not match the exported ONNX graph ({err}): "
                            "a bug in edgeprune's node-name mapping, please report it") from err
