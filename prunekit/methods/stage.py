"""One training stage, the way every training command runs it: full or LoRA training, the input's masks
held, pruning on a schedule (gradual magnitude or adaptive structured), soft targets from a teacher.
The result is a plain model — LoRA merged (sparsity kept), gated-off heads and neurons cut out — and
``save_stage`` writes it as a model folder (with the unmerged adapter in ``adapter/``)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from peft import LoraConfig
from transformers import PreTrainedModel, PreTrainedTokenizerBase, Trainer

from prunekit.adapters.registry import base_model_type, supported_model_types
from prunekit.data import TaskData
from prunekit.methods.adaptive import AdaptiveConfig, AdaptivePruningCallback, remove_pruned_units
from prunekit.methods.gradual import SparsityCallback
from prunekit.models import count_parameters
from prunekit.pruned_models import save_pruned
from prunekit.pruning.masks import MaskSet
from prunekit.training import FinetuneConfig, finetune
from prunekit.training.distill import DistillConfig, distill
from prunekit.training.lora import ADAPTER_DIR, attach_lora, merge_lora, trainable_parameters
from prunekit.training.memory import TrainingPeakMemory


@dataclass
class TrainingResult:
    model: PreTrainedModel  # plain: adapters merged, pruned units removed
    trainer: Trainer
    trainable_params: int
    masks: MaskSet | None  # unstructured masks the model holds (gradual pruning may have grown them)
    lora: dict | None = None  # adapter settings and the metrics before merging
    adapter_dir: Path | None = None  # the unmerged PEFT adapter, in the stage's scratch folder
    pruned: dict | None = None  # adaptive: params_before, per-layer structure, the schedule's history
    memory: dict | None = None  # the training loop's peak memory (``TrainingPeakMemory``)

    @property
    def is_main(self) -> bool:
        """False in every ``torchrun`` process but the first: those train, but write and evaluate nothing."""
        return self.trainer.is_world_process_zero()

    def train_record(self) -> dict:
        state = self.trainer.state
        return {
            "steps": state.global_step,
            "world_size": self.trainer.args.world_size,
            "runtime_s": round(state.log_history[-1].get("train_runtime", 0.0), 2) if state.log_history else 0.0,
            "loss": state.log_history[-1].get("train_loss") if state.log_history else None,
            "loss_curve": [[entry["step"], entry["loss"]] for entry in state.log_history if "loss" in entry],
            "trainable_params": self.trainable_params,
            "training_memory": self.memory,
        }


def train_stage(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    data: TaskData,
    config: FinetuneConfig,
    scratch: str | Path,
    *,
    lora: LoraConfig | None = None,
    masks: MaskSet | None = None,
    sparsity: SparsityCallback | None = None,
    adaptive: AdaptiveConfig | None = None,
    teacher: PreTrainedModel | None = None,
    kd: DistillConfig | None = None,
    evaluate: Callable[[PreTrainedModel], dict] | None = None,
) -> TrainingResult:
    """Train ``model`` on ``data.train`` and return the plain result (see module docstring).

    ``masks``: the input's unstructured masks — held through training (with LoRA, the masked layers
    add only ``M ⊙ ΔW``). ``sparsity``: a gradual magnitude-pruning callback (full training only).
    ``adaptive``: score, gate and finally remove heads / neurons. ``teacher`` + ``kd``: distil.
    ``evaluate``: metrics of the LoRA model before merging, for the ``lora`` record.
    """
    sparsity = sparsity or SparsityCallback(None if lora else masks)
    pruning = AdaptivePruningCallback(adaptive) if adaptive is not None else None
    trained = attach_lora(model, lora, masks) if lora else model
    memory = TrainingPeakMemory()
    callbacks = [sparsity, memory, *([pruning] if pruning else [])]
    if teacher is not None:
        kd = kd or DistillConfig()
        trainer = distill(trained, teacher, tokenizer, data.train, data.task, config, kd, scratch, callbacks)
    else:
        trainer = finetune(trained, tokenizer, data.train, data.task, config, scratch, callbacks=callbacks)
    result = TrainingResult(trained, trainer, trainable_parameters(trained), masks if lora else sparsity.masks)
    result.memory = memory.record
    if lora:
        result.lora = {
            "r": lora.r,
            "alpha": lora.lora_alpha,
            "dropout": lora.lora_dropout,
            "target_modules": len(lora.target_modules),
            "trainable_params": result.trainable_params,
        }
        if result.is_main:
            if evaluate is not None:  # gates (adaptive) are still on: this is the pruned network
                result.lora["metrics_before_merge"] = evaluate(trained)
            result.adapter_dir = Path(scratch) / ADAPTER_DIR
            trained.save_pretrained(result.adapter_dir)
            trained.get_base_model().config.save_pretrained(result.adapter_dir)  # the head, for `prunekit merge`
        result.model = merge_lora(trained, masks)
    if pruning is not None:  # the gated-off heads and neurons are cut out: the model gets smaller and faster
        params_before = count_parameters(result.model)[0]
        structure = remove_pruned_units(result.model, pruning)
        result.pruned = {"params_before": params_before, "structure": structure, "adaptive": pruning.report()}
    return result


def save_stage(result: TrainingResult, tokenizer: PreTrainedTokenizerBase, folder: str | Path) -> str | None:
    """Write the stage's model folder: weights, tokenizer, masks, and the unmerged adapter in
    ``adapter/``. Returns the save format (``plain`` or ``prunekit``; None for a model without adapter)."""
    folder = Path(folder)
    save_format = None
    if base_model_type(result.model.config.model_type) in supported_model_types():
        # its widths may differ from its config's (pruned here or in an earlier in-memory stage)
        save_format = save_pruned(result.model, folder)
    else:
        result.model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    if result.masks is not None:
        result.masks.save(folder)
    if result.adapter_dir is not None:
        shutil.copytree(result.adapter_dir, folder / ADAPTER_DIR, dirs_exist_ok=True)
    return save_format
