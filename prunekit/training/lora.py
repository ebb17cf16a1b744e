"""LoRA (PEFT) training whose result is merged back into the plain weights.

The adapters wrap every attention/FFN projection the model adapter knows; the task head is trained
in full (PEFT's ``modules_to_save`` for sequence classification). After training, ``merge_and_unload``
folds ``B·A`` into each weight, so callers get back the same plain model object.

On a pruned base, ``recompute_lora_updates`` makes every adapted layer compute with ``W + M ⊙ (s·B·A)``
(M the keep-mask) while it trains, so merging and re-applying the mask gives exactly the network that
was trained: the dense ``B·A`` update never reaches a pruned weight.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from peft.tuners.lora import LoraLayer
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback

from prunekit.adapters import get_adapter
from prunekit.data import Split, TaskSpec
from prunekit.errors import ConfigError
from prunekit.models import is_causal_lm
from prunekit.options import check_options, fraction, option, positive, positive_int, unused
from prunekit.pruning.masks import MaskSet
from prunekit.training.finetune import FinetuneConfig, finetune

ADAPTER_DIR = "adapter"  # the unmerged PEFT adapter inside a LoRA-trained model folder


def lora_config(
    model: PreTrainedModel,
    rank: int = 8,
    alpha: float | None = None,
    dropout: float = 0.05,
    targets: str = "auto",
) -> LoraConfig:
    """LoRA on every projection inside the transformer layers (``targets="auto"``, found through the
    model adapter) or on the Linear layers whose full name matches the regex ``targets``; a classifier
    head trained in full (a causal LM's head is its tied embedding matrix: it stays frozen)."""
    if targets == "auto":
        target_modules: list[str] | str = list(get_adapter(model).prunable_linears())
    else:
        try:
            pattern = re.compile(targets)
        except re.error as err:
            raise ConfigError(f"--lora-targets {targets}: not a regular expression ({err})") from None
        linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and pattern.fullmatch(n)]
        if not linears:
            raise ConfigError(f"--lora-targets {targets}: matches no Linear layer of the model")
        target_modules = linears
    return LoraConfig(
        task_type=TaskType.CAUSAL_LM if is_causal_lm(model.config) else TaskType.SEQ_CLS,
        r=rank,
        lora_alpha=alpha if alpha is not None else 2 * rank,
        lora_dropout=dropout,
        target_modules=target_modules,
    )


def attach_lora(model: PreTrainedModel, lora: LoraConfig, masks: MaskSet | None = None) -> PeftModel:
    """``model`` wrapped for LoRA training (base frozen); with ``masks`` its updates respect them. Each
    adapted Linear keeps only its input for the backward pass (``recompute_lora_updates``)."""
    peft_model = get_peft_model(model, lora)
    recompute_lora_updates(peft_model, masks)
    return peft_model


def merge_lora(peft_model: PeftModel, masks: MaskSet | None = None) -> PreTrainedModel:
    """Fold ``B·A`` into the weights (the plain model comes back); masks re-applied, so a sparse base
    stays exactly as sparse and the result equals the network that was trained."""
    model = peft_model.merge_and_unload()
    model.requires_grad_(True)  # PEFT froze the base; the merged model is a plain one, trainable like any
    if masks is not None:
        masks.apply(model)
    return model


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters() if p.requires_grad}.values())


def _recomputed_lora_forward(layer: LoraLayer, mask: torch.Tensor | None):
    def update(x: torch.Tensor, name: str) -> torch.Tensor:
        dropped = layer.lora_dropout[name](x)
        if mask is None:
            a, b = layer.lora_A[name], layer.lora_B[name]
            return b(a(dropped.to(a.weight.dtype))) * layer.scaling[name]
        delta = layer.get_delta_weight(name) * mask.to(x.device)
        return F.linear(dropped.to(delta.dtype), delta)

    def forward(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        result = layer.base_layer(x, *args, **kwargs)
        if layer.disable_adapters or layer.merged:
            return result
        for name in layer.active_adapters:
            if name in layer.lora_A:
                update_x = checkpoint(update, x, name, use_reentrant=False)  # RNG kept: the same dropout again
                result = result + update_x.to(result.dtype)
        return result

    return forward


def recompute_lora_updates(model: nn.Module, masks: MaskSet | None = None) -> int:
    """Make each LoRA Linear of ``model`` (after ``get_peft_model``) recompute its update ``s·B·A·drop(x)``
    in the backward pass instead of keeping the dropped-out input (a copy of every adapted layer's input)
    and, on a masked weight, the full-size ``M ⊙ s·B·A`` for it; where the base weight has a mask (names
    are the plain model's, ``...query.weight``) the update is ``M ⊙ ΔW``, so pruned weights stay zero.
    Returns how many layers were changed."""
    changed = 0
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer) and isinstance(module.base_layer, nn.Linear):
            key = f"{name}.weight".removeprefix("base_model.model.")
            module.forward = _recomputed_lora_forward(module, None if masks is None else masks.masks.get(key))
            changed += 1
    return changed


def finetune_lora_merged(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train: Split,
    task: TaskSpec,
    config: FinetuneConfig,
    work_dir: str | Path,
    lora: LoraConfig,
    callbacks: Sequence[TrainerCallback] = (),
    masks: MaskSet | None = None,
) -> None:
    """Train LoRA adapters (and the head) on ``model``, then merge them into its weights in place.

    With ``masks`` the pruned weights stay zero in training and after the merge (see module docstring).
    """
    peft_model = attach_lora(model, lora, masks)
    finetune(peft_model, tokenizer, train, task, config, work_dir, callbacks)
    merge_lora(peft_model, masks)


@dataclass
class LoraOptions:
    """LoRA (PEFT) adapters on a frozen base; each field is also a flag. ``peft_config`` builds PEFT's
    ``LoraConfig`` for a model (``training.lora.lora_config``)."""

    lora: bool = option(False, "train LoRA adapters and the task head instead of every weight", switch=True)
    lora_r: int = option(8, "adapter rank", parse=positive_int)
    lora_alpha: float | None = option(None, "scaling numerator (default 2 x rank)", parse=positive)
    lora_dropout: float = option(0.05, "dropout on the adapter input", parse=fraction)
    lora_targets: str = option(
        "auto",
        "'auto' (every attention and FFN projection, found through the model adapter) or a regex over Linear "
        "module names",
    )

    def __post_init__(self) -> None:
        check_options(self)

    def ineffective(self) -> dict[str, str]:
        return {} if self.lora else unused(("lora_r", "lora_alpha", "lora_dropout", "lora_targets"), "without --lora")

    def peft_config(self, model: Any) -> Any:
        """PEFT's ``LoraConfig`` for ``model``, or None without ``lora``."""
        if not self.lora:
            return None
        return lora_config(model, self.lora_r, self.lora_alpha, self.lora_dropout, self.lora_targets)
