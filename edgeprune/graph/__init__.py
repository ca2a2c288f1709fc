"""Channel groups and layer signatures (the planner's decision variables and the LUT keys).

Names are imported on first use, so that ``edgeprune.graph.signature`` (the LUT keys) can be
imported without torch (``edgeprune targets`` stays fast).
"""
from __future__ import annotations

import importlib
from typing import Any

_NAMES = {
    "ChannelGraph": "edgeprune.graph.groups",
    "ChannelGroup": "edgeprune.graph.groups",
    "LayerInfo": "edgeprune.graph.groups",
    "Member": "edgeprune.graph.groups",
    "channel_groups": "edgeprune.graph.groups",
    "prune": "edgeprune.graph.groups",
    "LayerSignature": "edgeprune.graph.signature",
}

__all__ = ["ChannelGraph", "ChannelGroup", "LayerInfo", "LayerSignature", "Member", "channel_groups", "prune"]


def __getattr__(name: str) -> Any:
    module = _NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'edgeprune.graph' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
