"""Physical channel removal (:func:`prune`) and the granularity helper."""
from edgeprune.prune.granularity import round_channels
from edgeprune.prune.remove import prune

__all__ = ["prune", "round_channels"]

from edgeprune._callable import make_callable

make_callable(__name__, "prune")
