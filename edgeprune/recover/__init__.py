"""Recovery after pruning: fine-tuning with optional knowledge distillation."""
from edgeprune.recover.finetune import RecoverConfig, RecoverResult, recover

__all__ = ["RecoverConfig", "RecoverResult", "recover"]

from edgeprune._callable import make_callable

make_callable(__name__, "recover")
