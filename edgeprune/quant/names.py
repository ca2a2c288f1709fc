"""ONNX node names <-> PyTorch layer (module) names, and the warning class of this package."""
from __future__ import annotations

import ast
from collections.abc import Iterable
from typing import Any


class QuantWarning(UserWarning):
    """Something about a quantisation the user should know (few calibration samples, an op kept fp32, ...)."""


def module_path(node_name: str) -> str | None:
    """The PyTorch module path of an ONNX node name from the TorchScript exporter, or None.

    ``/layer1/layer1.0/conv1/Conv`` -> ``layer1.0.conv1``; ``/Relu`` -> None (no module).
    Scope segments are either a child name (``conv1``) or a full dotted path that
    extends the current one (``layer1.0`` under ``layer1``). Suffixes that ORT adds
    when it rewrites nodes (``Conv_token_6``, ``..._nchwc``) live in the last
    segment, which is dropped.
    """
    if not node_name.startswith("/") or node_name.count("/") < 2:
        return None
    parts = [p for p in node_name.split("/") if p][:-1]
    path: list[str] = []
    for seg in parts:
        cur = ".".join(path)
        if cur and seg.startswith(cur + "."):
            path = seg.split(".")
        else:
            path += seg.split(".")
    return ".".join(path) or None


def _dynamo_scope(node: Any) -> str | None:
    for prop in getattr(node, "metadata_props", []):
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                return None
            if not isinstance(scopes, (list, tuple)):
                return None
            return module_path("/" + "/".join(str(s) for s in scopes if s) + "/op")
    return None


def layer_of_node(node: Any) -> str | None:
    """The module name a node (``onnx.NodeProto``) belongs to, from its name or the dynamo exporter's metadata."""
    return module_path(node.name) or _dynamo_scope(node)


def match_nodes(nodes: Iterable[Any], names: Iterable[str]) -> tuple[list[str], list[str]]:
    """ONNX node names selected by ``names`` (node names, or module names and their sub-modules), and the names that matched nothing."""
    nodes = list(nodes)
    chosen: list[str] = []
    unmatched: list[str] = []
    for want in names:
        hit = False
        for n in nodes:
            layer = layer_of_node(n) or ""
            if n.name == want or layer == want or layer.startswith(want + "."):
                hit = True
                if n.name not in chosen:
                    chosen.append(n.name)
        if not hit:
            unmatched.append(want)
    return chosen, unmatched
