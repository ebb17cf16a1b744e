"""Knowledge distillation through the HF Trainer: a student learns from a frozen teacher.

Loss = α_ce · task loss (cross-entropy, or MSE for regression)
     + α_kd · soft-target loss: KL(teacher ‖ student) at temperature T, scaled by T² (Hinton et al.
       2015; the scaling keeps its gradients comparable across T); for regression, MSE to the
       teacher's prediction
     + α_hidden · hidden-state loss (MSE or 1 − cosine, over non-padding tokens) for each mapped
       (student layer, teacher layer) pair, through a learned linear projection when widths differ
     + α_attn · attention-map loss (TinyBERT): MSE between head-averaged attention maps of mapped
       layers (averaging over heads lets a pruned student with fewer heads be distilled too).

For a causal language model (task ``lm``) the soft-target loss is per token: KL between the two
next-token distributions at every position of the packed training blocks, averaged over the tokens
(the logit distillation of Minitron / MiniLLM-style recovery of pruned decoders).

The teacher runs in eval mode without gradients. With ``cache_teacher`` (soft targets only, labelled
tasks) its logits are computed once per training example before training starts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase, Trainer, TrainerCallback

from prunekit.adapters import get_adapter
from prunekit.data import EncodedSplit, Split, TaskSpec, make_collator
from prunekit.data.text import TextSplit
from prunekit.errors import ConfigError
from prunekit.lm_loss import causal_lm_kd_loss, causal_lm_loss, head_returns_hidden, plain_head
from prunekit.pruning.masks import MaskSet
from prunekit.pruning.surgery import drop_layers
from prunekit.training.config import FinetuneConfig
from prunekit.training.distill_config import DistillConfig
from prunekit.training.finetune import (
    CheckedTrainer,
    training_arguments,
    training_data,
    warn_if_training_would_not_fit,
)

PROJECTIONS = "prunekit_distill_projections"  # attached to the student while it trains, removed after


def resolve_layer_map(text: str, student_layers: int, teacher_layers: int) -> list[tuple[int, int]]:
    """``auto``: student layer j learns from teacher layer ⌈(j + 1)·L_t / L_s⌉ − 1 (the last layer of
    each block of teacher layers); else explicit ``s:t`` pairs, checked against both depths."""
    if text == "auto":
        return [(j, -(-(j + 1) * teacher_layers // student_layers) - 1) for j in range(student_layers)]
    pairs = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+):(\d+)\s*", part)
        if not match:
            raise ConfigError(f"--layer-map {text}: expected 'auto' or student:teacher pairs like 0:1,1:3")
        s, t = int(match.group(1)), int(match.group(2))
        if s >= student_layers or t >= teacher_layers:
            raise ConfigError(
                f"--layer-map {part.strip()}: out of range; the student has layers 0..{student_layers - 1}, "
                f"the teacher 0..{teacher_layers - 1}"
            )
        pairs.append((s, t))
    return pairs


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """T² · KL(softmax(teacher / T) ‖ softmax(student / T)), averaged over the batch — or, for logits of
    shape (batch, seq, vocab), over the tokens where ``mask`` (batch, seq) is 1 (all without a mask)."""
    if student_logits.dim() == 3:
        keep = mask.reshape(-1).bool() if mask is not None else slice(None)
        student_logits = student_logits.reshape(-1, student_logits.shape[-1])[keep]
        teacher_logits = teacher_logits.reshape(-1, teacher_logits.shape[-1])[keep]
    log_student = F.log_softmax(student_logits / temperature, dim=-1)
    log_teacher = F.log_softmax(teacher_logits / temperature, dim=-1)
    return F.kl_div(log_student, log_teacher, log_target=True, reduction="batchmean") * temperature**2


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` (batch, seq, ...) over the positions where ``mask`` (batch, seq) is 1."""
    mask = mask.to(values.dtype)
    while mask.dim() < values.dim():
        mask = mask.unsqueeze(-1)
    weight = mask.expand_as(values)
    return (values * weight).sum() / weight.sum().clamp_min(1.0)


def student_from_teacher(teacher: PreTrainedModel, num_layers: int) -> tuple[PreTrainedModel, list[int]]:
    """A copy of ``teacher`` keeping ``num_layers`` evenly spaced layers (0, k, 2k, ... with
    k = L / num_layers: layers 0, 2, 4 of 6, as DistilBERT initialises); embeddings and classifier copied."""
    import copy

    total = len(get_adapter(teacher).layer_list())
    if not 1 <= num_layers <= total:
        raise ConfigError(f"--student-layers {num_layers}: the teacher has {total} layers; choose 1..{total}")
    keep = sorted({(i * total) // num_layers for i in range(num_layers)})
    student = copy.deepcopy(teacher)
    drop_layers(get_adapter(student), keep)
    return student, keep


def masks_of_kept_layers(
    masks: MaskSet | None, teacher: PreTrainedModel, student: PreTrainedModel, kept: list[int]
) -> MaskSet | None:
    """The teacher's masks renamed for a student built from its layers ``kept`` (the others dropped)."""
    if masks is None:
        return None

    teacher_layers, student_layers = get_adapter(teacher).layer_prefixes(), get_adapter(student).layer_prefixes()
    renamed = {}
    for name, mask in masks.masks.items():
        layer = next((i for i, prefix in enumerate(teacher_layers) if name.startswith(prefix)), None)
        if layer is None:
            renamed[name] = mask
        elif layer in kept:
            renamed[student_layers[kept.index(layer)] + name[len(teacher_layers[layer]) :]] = mask
    return MaskSet(renamed).check_fits(student, "--teacher masks")


class DistillTrainer(CheckedTrainer):
    """A Trainer whose loss is the distillation objective above."""

    def __init__(
        self,
        *args,
        teacher: PreTrainedModel,
        distill: DistillConfig,
        regression: bool,
        causal_lm: bool = False,
        teacher_logits: torch.Tensor | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.teacher = teacher.eval()  # its forwards run under no_grad; its parameters stay as they are
        self.distill = distill
        self.regression = regression
        self.causal_lm = causal_lm
        self.teacher_logits = teacher_logits

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        config = self.distill
        index = inputs.pop("example_index", None)
        extra = {"output_hidden_states": bool(config.alpha_hidden), "output_attentions": bool(config.alpha_attn)}
        heads = self._plain_heads(model)
        if heads is not None:
            return self._loss_without_logits(model, inputs, extra, heads, return_outputs)
        outputs = model(**inputs, **extra)
        mask = inputs.get("attention_mask")  # packed text blocks have none: every token counts
        loss = config.alpha_ce * outputs.loss if config.alpha_ce else outputs.logits.new_zeros(())
        if self.teacher_logits is not None and index is not None:
            teacher_logits, teacher_out = self.teacher_logits.to(outputs.logits.device)[index], None
        else:
            self.teacher.to(outputs.logits.device)
            with torch.no_grad():
                teacher_out = self.teacher(**{k: v for k, v in inputs.items() if k != "labels"}, **extra)
            teacher_logits = teacher_out.logits
        if config.alpha_kd:
            if self.regression:
                soft = F.mse_loss(outputs.logits.float(), teacher_logits.float())
            else:
                soft = kd_loss(outputs.logits.float(), teacher_logits.float(), config.temperature, mask)
            loss = loss + config.alpha_kd * soft
        if config.uses_layers:
            if mask is None:
                mask = torch.ones(inputs["input_ids"].shape, device=outputs.logits.device)
            loss = loss + self._layer_losses(model, outputs, teacher_out, mask)
        return (loss, outputs) if return_outputs else loss

    def _plain_heads(self, model) -> tuple[nn.Linear, nn.Linear] | None:
        """A causal LM's student and teacher output heads when both are plain linear layers (their losses
        can then skip the logits), else None."""
        if not self.causal_lm:
            return None
        student, teacher = plain_head(self.accelerator.unwrap_model(model)), plain_head(self.teacher)
        return (student, teacher) if student is not None and teacher is not None else None

    def _loss_without_logits(self, model, inputs, extra, heads, return_outputs):
        """The objective for causal LMs, from both models' final hidden states: cross-entropy and per-token
        KD computed over chunks of tokens (``prunekit.lm_loss``), so neither model's logits are held whole."""
        config, (head, teacher_head) = self.distill, heads
        labels = inputs.pop("labels")
        self.teacher.to(labels.device)
        teacher_passes = head_returns_hidden(teacher_head) if teacher_head is not head else nullcontext()
        with head_returns_hidden(head), teacher_passes:
            outputs = model(**inputs, **extra)
            with torch.no_grad():
                teacher_out = self.teacher(**inputs, **extra)
        hidden, mask = outputs.logits, inputs.get("attention_mask")  # packed text blocks have no mask
        loss = config.alpha_ce * causal_lm_loss(hidden, head, labels) if config.alpha_ce else hidden.new_zeros(())
        if config.alpha_kd:
            soft = causal_lm_kd_loss(hidden, head, teacher_out.logits, teacher_head, config.temperature, mask)
            loss = loss + config.alpha_kd * soft
        if config.uses_layers:
            mask = torch.ones(labels.shape, device=hidden.device) if mask is None else mask
            loss = loss + self._layer_losses(model, outputs, teacher_out, mask)
        return (loss, outputs) if return_outputs else loss

    def _layer_losses(self, model, outputs, teacher_out, mask: torch.Tensor) -> torch.Tensor:
        config = self.distill
        projections = getattr(self.accelerator.unwrap_model(model), PROJECTIONS, None)  # DDP wraps the student
        total = outputs.logits.new_zeros(())
        for k, (s, t) in enumerate(config.pairs):
            if config.alpha_hidden:
                student_h = outputs.hidden_states[s + 1]
                teacher_h = teacher_out.hidden_states[t + 1]
                if projections is not None:
                    student_h = projections[k](student_h)
                if config.hidden_loss == "mse":
                    term = _masked_mean((student_h - teacher_h).pow(2).mean(-1), mask)
                else:
                    term = _masked_mean(1 - F.cosine_similarity(student_h, teacher_h, dim=-1), mask)
                total = total + config.alpha_hidden * term
            if config.alpha_attn:
                student_a = outputs.attentions[s].mean(1)  # (batch, query, key), averaged over heads
                teacher_a = teacher_out.attentions[t].mean(1)
                pair_mask = mask[:, :, None] * mask[:, None, :]
                total = total + config.alpha_attn * _masked_mean((student_a - teacher_a).pow(2), pair_mask)
        return total


def check_teacher(teacher: PreTrainedModel, student: PreTrainedModel, task: TaskSpec, flag: str) -> None:
    """The teacher's outputs must match the student's: next-token logits over the same vocabulary for a
    language model, as many outputs as the task's labels for a classifier."""
    from prunekit.models import is_causal_lm

    if task.causal_lm:
        if not is_causal_lm(teacher.config):
            raise ConfigError(f"{flag}: not a causal language model; distillation on a text corpus needs one")
        sizes = (teacher.get_output_embeddings().out_features, student.get_output_embeddings().out_features)
        if sizes[0] != sizes[1]:
            raise ConfigError(
                f"{flag}: its vocabulary has {sizes[0]} tokens, the student's {sizes[1]}; they need the same one"
            )
    elif teacher.config.num_labels != task.num_labels:
        raise ConfigError(
            f"{flag}: its head has {teacher.config.num_labels} output(s) but the task needs {task.num_labels}; "
            "fine-tune the teacher on this task first"
        )


def _hidden_size(model: PreTrainedModel) -> int:
    return model.get_input_embeddings().embedding_dim


@torch.no_grad()
def teacher_logits_for(
    teacher: PreTrainedModel, dataset: EncodedSplit, tokenizer, batch_size: int = 64
) -> torch.Tensor:
    """The teacher's logits for every example, in dataset order (one forward per example)."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=make_collator(tokenizer))
    teacher.eval()
    device = next(teacher.parameters()).device
    logits = []
    for batch in loader:
        batch.pop("labels")
        batch.pop("example_index", None)
        logits.append(teacher(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu())
    return torch.cat(logits)


def distill(
    student: PreTrainedModel,
    teacher: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train: Split | TextSplit,
    task: TaskSpec,
    config: FinetuneConfig,
    distill_config: DistillConfig,
    work_dir: str | Path,
    callbacks: Sequence[TrainerCallback] = (),
) -> Trainer:
    """Train ``student`` in place against ``teacher`` on ``train``; returns the Trainer."""
    if task.causal_lm and distill_config.cache_teacher:
        raise ConfigError("--cache-teacher: not for a text corpus (a vocabulary of logits for every token)")
    plain = student.get_base_model() if hasattr(student, "get_base_model") else student  # under PEFT's wrapper
    student_layers = len(get_adapter(plain).layer_list())
    teacher_layers = len(get_adapter(teacher).layer_list())
    if distill_config.uses_layers:
        distill_config.pairs = resolve_layer_map(distill_config.layer_map, student_layers, teacher_layers)
        if distill_config.alpha_attn:
            for model in (student, teacher):
                model.set_attn_implementation("eager")  # SDPA kernels do not return attention maps
    widths = (_hidden_size(student), _hidden_size(teacher))
    if distill_config.alpha_hidden and widths[0] != widths[1]:
        student.add_module(PROJECTIONS, nn.ModuleList(nn.Linear(*widths) for _ in distill_config.pairs))
    cached = None
    if task.causal_lm:
        data = training_data(train, task, tokenizer, config.max_length)
    else:
        dataset = EncodedSplit(train, tokenizer, config.max_length, task.is_regression, with_index=True)
        data = {"train_dataset": dataset, "data_collator": make_collator(tokenizer)}
        if distill_config.cache_teacher:
            cached = teacher_logits_for(teacher, dataset, tokenizer)
    args = training_arguments(config, work_dir, len(data["train_dataset"]))
    args.remove_unused_columns = False  # keep example_index (not a model input) for the logit cache
    trainer = DistillTrainer(
        model=student,
        args=args,
        **data,
        processing_class=tokenizer,
        callbacks=list(callbacks),
        teacher=teacher,
        distill=distill_config,
        regression=task.is_regression,
        causal_lm=task.causal_lm,
        teacher_logits=cached,
    )
    warn_if_training_would_not_fit(student, config)
    try:
        trainer.train()
    finally:
        if hasattr(student, PROJECTIONS):
            delattr(student, PROJECTIONS)
    return trainer
