"""Training: fine-tuning and distillation through the HF Trainer."""

from prunekit.training.config import FinetuneConfig
from prunekit.training.finetune import finetune

__all__ = ["FinetuneConfig", "finetune"]
