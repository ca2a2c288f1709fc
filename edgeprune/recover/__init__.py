"""Recovery after pruning: fine-tuning with optional knowledge distillation."""
from edgeprune.recover.finetune import RecoverConfig, RecoverResult, recover

__all__ = ["RecoverConfig", "RecoverResult", "recover"]
