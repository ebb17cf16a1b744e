"""LoRA (PEFT) training whose result is merged back into the plain weights.

The adapters wrap every attention/FFN projection the model adapter knows; the task head is trained
in full (PEFT's ``modules_to_save`` for sequence classification). After training, ``merge_and_unload``
folds ``B·A`` into each weight, so callers get back the same plain model object.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from peft import LoraConfig, TaskType, get_peft_model
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback

from prunekit.adapters import get_adapter
from prunekit.data import Split, TaskSpec
from prunekit.training.finetune import FinetuneConfig, finetune


def lora_config(model: PreTrainedModel, rank: int = 8, alpha: int | None = None, dropout: float = 0.05) -> LoraConfig:
    """LoRA on every projection inside the transformer layers; the classifier trained in full."""
    return LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=rank,
        lora_alpha=alpha if alpha is not None else 2 * rank,
        lora_dropout=dropout,
        target_modules=list(get_adapter(model).prunable_linears()),
    )


def finetune_lora_merged(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train: Split,
    task: TaskSpec,
    config: FinetuneConfig,
    work_dir: str | Path,
    lora: LoraConfig,
    callbacks: Sequence[TrainerCallback] = (),
) -> None:
    """Train LoRA adapters (and the head) on ``model``, then merge them into its weights in place."""
    peft_model = get_peft_model(model, lora)
    finetune(peft_model, tokenizer, train, task, config, work_dir, callbacks)
    peft_model.merge_and_unload()
