"""One module per budget metric; each registers itself with :func:`edgeprune.budget.metric.register_metric`.

A new budget kind (energy, ...) is one new module here: the registry discovers it.
"""
