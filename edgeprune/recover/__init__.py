"""Recovery after pruning: fine-tuning with optional knowledge distillation."""
from edgeprune.recover.finetune import RecoverConfig, RecoverResult, recover

__all__ = ["RecoverConfig", "RecoverResult", "recover"]

from edgeprune._callable import make_callable  # noqa: E402

make_callable(__name__, "recover")
