"""Full fine-tuning through the Hugging Face Trainer (so ``torchrun`` / ``accelerate launch`` just work)."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import torch
from transformers import (
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    default_data_collator,
)
from transformers.trainer_utils import get_last_checkpoint

from prunekit.data import EncodedSplit, Split, TaskSpec, make_collator
from prunekit.data.text import BlockDataset, TextSplit, packed_blocks
from prunekit.errors import TrainingError
from prunekit.lm_loss import causal_lm_loss, head_returns_hidden, plain_head
from prunekit.training.config import FinetuneConfig


def training_arguments(config: FinetuneConfig, work_dir: str | Path, train_size: int) -> TrainingArguments:
    """The Trainer's arguments for ``config`` on ``train_size`` examples (which resolves ``auto``)."""
    config = config.resolved(train_size)
    cpu = config.device == "cpu" or not torch.cuda.is_available()
    return TrainingArguments(
        output_dir=str(work_dir),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps if config.max_steps is not None else -1,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.lr,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_ratio,  # a float < 1 is a fraction of the total steps
        seed=config.seed,
        data_seed=config.seed,
        logging_steps=config.logging_steps,
        save_strategy="steps" if config.checkpoint_every else "no",
        save_steps=config.checkpoint_every or 500,
        save_total_limit=1,  # the latest checkpoint is enough to continue
        report_to="none",
        dataloader_num_workers=0,
        dataloader_pin_memory=not cpu,
        # accelerate runs multi-process CPU training (gloo) only when told it is on the CPU
        use_cpu=cpu,
        bf16=config.precision == "bfloat16",
        fp16=config.precision == "float16",
        ddp_find_unused_parameters=False,
        activation_checkpointing=config.gradient_checkpointing,
        disable_tqdm=False,
    )


class CheckedTrainer(Trainer):
    """A Trainer that stops at the first non-finite loss, and refuses to end with non-finite weights."""

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not torch.isfinite(loss).all():
            raise TrainingError(
                f"the training loss became {loss.item()} at step {self.state.global_step + 1}; "
                "lower --lr or check --weight-decay and the labels. Nothing was saved"
            )
        return loss

    def train(self, *args, **kwargs):
        if self.args.save_strategy != "no" and "resume_from_checkpoint" not in kwargs:
            last = get_last_checkpoint(self.args.output_dir) if Path(self.args.output_dir).is_dir() else None
            if last is not None:  # a killed run's checkpoint: weights, optimizer, schedule, data order, RNG
                print(f"continuing from {last}", flush=True)
                kwargs["resume_from_checkpoint"] = last
        try:
            result = super().train(*args, **kwargs)
        except BaseException:
            for callback in self.callback_handler.callbacks:  # end the progress bar's line before the error
                bar = getattr(callback, "training_bar", None)
                if bar is not None:
                    bar.close()
            raise
        bad = next((name for name, p in self.model.named_parameters() if not torch.isfinite(p).all()), None)
        if bad is not None:
            raise TrainingError(f"training left non-finite values in {bad}; nothing was saved")
        return result


def training_data(train, task: TaskSpec, tokenizer: PreTrainedTokenizerBase, max_length: int) -> dict:
    """The Trainer's ``train_dataset`` and ``data_collator``: labelled examples padded per batch, or a
    text split (task ``lm``) as packed blocks of ``max_length`` tokens."""
    if task.causal_lm:
        return {"train_dataset": BlockDataset(packed_blocks(tokenizer, train, max_length)),
                "data_collator": default_data_collator}  # fmt: skip
    return {"train_dataset": EncodedSplit(train, tokenizer, max_length, task.is_regression),
            "data_collator": make_collator(tokenizer)}  # fmt: skip


def warn_if_training_would_not_fit(model: PreTrainedModel, config: FinetuneConfig) -> bool:
    """One warning line when a training step (activations of a micro-batch, gradients and Adam's two moments
    of the trainable weights) would need more memory than is available; True when it warned."""
    from prunekit.memory import activation_bytes, warn_if_short

    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    tokens = config.batch_size * config.max_length
    needed = activation_bytes(model, tokens, config.max_length, config.gradient_checkpointing) + 12 * trainable
    remedy = "lower it with --batch-size or --max-length"
    if not config.gradient_checkpointing:
        remedy += ", or add --gradient-checkpointing"
    return warn_if_short(needed, f"training at batch {config.batch_size} x {config.max_length} tokens", remedy)


def finetune(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train: Split | TextSplit,
    task: TaskSpec,
    config: FinetuneConfig,
    work_dir: str | Path,
    callbacks: Sequence[TrainerCallback] = (),
) -> Trainer:
    """Train ``model`` in place on ``train``; returns the Trainer (for its state and accelerator). A causal
    LM's loss is computed without its logits (``training.lm_loss``).

    >>> trainer = finetune(model, tokenizer, data.train, data.task, FinetuneConfig(), "/tmp/run")  # doctest: +SKIP
    """
    data = training_data(train, task, tokenizer, config.max_length)
    head = plain_head(model) if task.causal_lm else None
    chunked = head is not None  # a plain output head (not one with its own adapter)

    def loss_without_logits(outputs, labels, num_items_in_batch=None):
        return causal_lm_loss(outputs.logits, head, labels, num_items_in_batch)

    trainer = CheckedTrainer(
        model=model,
        args=training_arguments(config, work_dir, len(data["train_dataset"])),
        **data,
        processing_class=tokenizer,
        callbacks=list(callbacks),
        compute_loss_func=loss_without_logits if chunked else None,
    )
    warn_if_training_would_not_fit(model, config)
    with head_returns_hidden(head) if chunked else nullcontext():
        trainer.train()
    return trainer
