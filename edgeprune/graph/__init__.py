"""Tracing and the group model: channel groups, layer signatures, custom leaf layers, example inputs.

Physical removal of channels is in :mod:`edgeprune.prune`. Names are imported on first use, so
that ``edgeprune.graph.signature`` (the LUT keys) can be imported without torch (``edgeprune
targets`` stays fast).
"""
from __future__ import annotations

import importlib
from typing import Any

_NAMES = {
    "channel_groups": "edgeprune.graph.analyse",
    "LAYER_PRUNERS": "edgeprune.graph.custom_layers",
    "LayerPruner": "edgeprune.graph.custom_layers",
    "register_layer": "edgeprune.graph.custom_layers",
    "example_input": "edgeprune.graph.example",
    "ChannelGraph": "edgeprune.graph.model",
    "ChannelGroup": "edgeprune.graph.model",
    "LayerInfo": "edgeprune.graph.model",
    "Member": "edgeprune.graph.model",
    "LayerSignature": "edgeprune.graph.signature",
}

__all__ = ["LAYER_PRUNERS", "ChannelGraph", "ChannelGroup", "LayerInfo", "LayerPruner", "LayerSignature", "Member",
           "channel_groups", "example_input", "register_layer"]


def __getattr__(name: str) -> Any:
    module = _NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'edgeprune.graph' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
