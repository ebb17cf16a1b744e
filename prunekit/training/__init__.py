"""Training: fine-tuning through the HF Trainer."""

from prunekit.training.finetune import FinetuneConfig, finetune

__all__ = ["FinetuneConfig", "finetune"]
