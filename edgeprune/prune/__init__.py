"""Physical channel removal and the granularity helper."""
from edgeprune.graph.groups import prune
from edgeprune.prune.granularity import round_channels

__all__ = ["prune", "round_channels"]

from edgeprune._callable import make_callable

make_callable(__name__, "prune")
