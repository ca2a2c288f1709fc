"""Budgets: parsing (``latency=0.6x,bytes=2MB``), the metric registry, and limits resolved once (docs/plan.md).

``Budget.parse(text)`` -> :class:`Budget`; ``budget.resolve(DenseContext(...), targets)``
-> :class:`Limits`, the absolute limits every later stage reads. Each metric
(latency, cycles, model bytes, MACs, peak memory) is one module in
``edgeprune/budget/kinds/``.
"""
from edgeprune.budget.budget import ALL, Budget, Limit, Limits, Resolved
from edgeprune.budget.metric import DenseContext, Metric, get_metric, metrics, register_metric, time_metric

__all__ = ["ALL", "Budget", "DenseContext", "Limit", "Limits", "Metric", "Resolved", "get_metric", "metrics",
           "register_metric", "time_metric"]
