"""Run a model over a split and score it with the task's official metrics."""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from prunekit.data import EncodedSplit, Split, TaskSpec, compute_metrics, make_collator
from prunekit.devices import model_device
from prunekit.errors import ModelError


@torch.inference_mode()
def predict_logits(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    split: Split,
    *,
    regression: bool,
    max_length: int = 128,
    batch_size: int = 64,
    progress: bool = True,
) -> np.ndarray:
    """Logits for every example of ``split``, shape ``(N, num_labels)``."""
    dataset = EncodedSplit(split, tokenizer, max_length, regression)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=make_collator(tokenizer))
    device = model_device(model)
    was_training = model.training
    model.eval()
    outputs = []
    for batch in tqdm(loader, desc="evaluate", disable=not progress, leave=False):
        batch.pop("labels")
        batch = {key: value.to(device) for key, value in batch.items()}
        outputs.append(model(**batch).logits.float().cpu())
    model.train(was_training)
    logits = torch.cat(outputs)
    check_finite_outputs(logits, "logits")
    return logits.numpy()


def check_finite_outputs(values: torch.Tensor, what: str) -> None:
    """A model whose outputs are NaN or infinite has no metric and no parity: stop instead of using them."""
    if not bool(torch.isfinite(values).all()):
        count = int((~torch.isfinite(values)).sum())
        raise ModelError(f"the model computed {count:,} non-finite {what} (nan or inf): its activations overflow")


def evaluate_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    split: Split,
    task: TaskSpec,
    *,
    max_length: int = 128,
    batch_size: int = 64,
    progress: bool = True,
) -> dict[str, float]:
    """``{metric: value}`` of ``model`` on ``split``.

    >>> evaluate_model(model, tokenizer, data.eval, data.task)  # doctest: +SKIP
    {'accuracy': 0.84}
    """
    logits = predict_logits(
        model,
        tokenizer,
        split,
        regression=task.is_regression,
        max_length=max_length,
        batch_size=batch_size,
        progress=progress,
    )
    return compute_metrics(task, logits, np.asarray(split.labels))
