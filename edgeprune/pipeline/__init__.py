"""``compress``: every step from a trained model to a verified engine that meets a measured budget.

measure dense -> channel groups -> budget -> importance -> plan -> prune -> fine-tune -> compile -> verify
-> measure both (interleaved) -> report, each a short function in :mod:`.run` over the shared
:class:`~edgeprune.pipeline.context.Run`; checkpoints in ``<out>/state/`` (:mod:`.stages`); measurements through
the target's backend (:mod:`.measure`); the planner search on measurement (:mod:`.search`).
"""
from edgeprune.pipeline.config import CompressConfig, CompressResult, ModelFigures
from edgeprune.pipeline.run import STAGES, compress

__all__ = ["STAGES", "CompressConfig", "CompressResult", "ModelFigures", "compress"]
