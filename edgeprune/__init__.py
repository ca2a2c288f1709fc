"""edgeprune: compress trained PyTorch models for embedded hardware under an explicit, measured budget.

The public API, imported lazily so ``import edgeprune`` stays light::

    import edgeprune as ep
    model = ep.load_model("resnet20-cifar10")
    result = ep.compress(model, data="cifar10-demo", target="cpu-ort", budget="latency=0.6x")
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "load_model": "edgeprune.models",
    "load_pruned": "edgeprune.models.pruned",
    "load_data": "edgeprune.data",
    "as_source": "edgeprune.data.source",
    "DataSource": "edgeprune.data.source",
    "get_target": "edgeprune.config",
    "list_targets": "edgeprune.config",
    "load_target": "edgeprune.config",
    "Target": "edgeprune.config",
    "Budget": "edgeprune.budget",
    "channel_groups": "edgeprune.graph",
    "prune": "edgeprune.prune",
    "example_input": "edgeprune.graph",
    "register_layer": "edgeprune.graph",
    "round_channels": "edgeprune.prune",
    "importance": "edgeprune.importance",
    "list_criteria": "edgeprune.importance",
    "compile": "edgeprune.compile",
    "verify": "edgeprune.verify",
    "recover": "edgeprune.recover",
    "RecoverConfig": "edgeprune.recover",
    "compress": "edgeprune.pipeline",
    "CompressConfig": "edgeprune.pipeline",
    "CompressResult": "edgeprune.pipeline",
    "profile": "edgeprune.profile",
    "load_profile": "edgeprune.profile",
    "plan": "edgeprune.plan",
    "Plan": "edgeprune.plan",
    "PlanConfig": "edgeprune.plan",
    "apply": "edgeprune.plan",
    "EdgepruneError": "edgeprune.errors",
    "BadInput": "edgeprune.errors",
    "BudgetMissed": "edgeprune.errors",
    "AccuracyDropped": "edgeprune.errors",
}

__all__ = [name for name in sorted(_API)] + ["__version__"]  # not sorted(...) + [...]: ruff PLE0605


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'edgeprune' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
