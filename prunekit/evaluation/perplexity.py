"""Perplexity of a causal LM over a token stream, in fixed windows (the Hugging Face sliding-window rule).

Windows start every ``stride`` tokens and hold up to ``max_length`` tokens; each scores only the
tokens that no earlier window scored, with everything before them in the window as context. With
``stride == max_length`` the windows do not overlap (each window's first token is context only).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from prunekit.data.text import TextSplit, token_stream
from prunekit.devices import model_device
from prunekit.errors import ConfigError
from prunekit.evaluation.evaluate import check_finite_outputs
from prunekit.lm_loss import IGNORE, causal_lm_loss, head_returns_hidden, plain_head

WINDOW_RULE = (
    "windows of max_length tokens start every stride tokens over the dev text tokenized as one stream "
    "(no special tokens); each scores the tokens no earlier window scored, with the rest of the window as context"
)


def _summed_loss(model: PreTrainedModel, inputs: torch.Tensor, labels: torch.Tensor) -> float:
    """The summed next-token loss of one batch of windows; with a plain output head, computed in chunks
    of tokens without the (batch x length x vocabulary) logits — three copies of them made evaluation the
    peak of a whole pruning run on a 49k vocabulary."""
    head = plain_head(model)
    if head is None:
        logits = model(input_ids=inputs, use_cache=False).logits[:, :-1].float()
        check_finite_outputs(logits, "logits")
        flat = logits.reshape(-1, logits.shape[-1])
        return F.cross_entropy(flat, labels[:, 1:].reshape(-1), ignore_index=IGNORE, reduction="sum").item()
    with head_returns_hidden(head):
        hidden = model(input_ids=inputs, use_cache=False).logits
    check_finite_outputs(hidden, "hidden states")
    total = causal_lm_loss(hidden, head, labels, num_items_in_batch=1)
    check_finite_outputs(total, "logits")  # finite hidden states can still overflow in the head
    return total.item()


def windows(total: int, max_length: int, stride: int) -> list[tuple[int, int, int]]:
    """``(begin, end, scored)`` per window: tokens ``[begin, end)`` go in, the last ``scored`` are targets."""
    if stride > max_length:
        raise ConfigError(f"--stride {stride}: at most --max-length ({max_length}), or tokens would go unscored")
    spans, scored_until = [], 1  # the very first token has no context: never a target
    for begin in range(0, total - 1, stride):
        end = min(begin + max_length, total)
        spans.append((begin, end, end - max(scored_until, begin + 1)))
        scored_until = end
        if end == total:
            break
    return spans


@torch.inference_mode()
def perplexity(
    model: PreTrainedModel,
    ids: torch.Tensor,
    *,
    max_length: int = 512,
    stride: int | None = None,
    batch_size: int = 8,
    progress: bool = True,
) -> dict:
    """``{perplexity, loss, tokens_scored, windows}`` of ``model`` on the 1-D token tensor ``ids``."""
    stride = stride or max_length
    if max_length < 2:
        raise ConfigError(f"--max-length {max_length}: perplexity windows need at least 2 tokens")
    spans = windows(len(ids), max_length, stride)
    device = model_device(model)
    was_training = model.training
    model.eval()
    nll, count = 0.0, 0
    # windows of one length go together; only the last can be shorter
    full = [s for s in spans if s[1] - s[0] == max_length]
    groups = [full[i : i + batch_size] for i in range(0, len(full), batch_size)]
    groups += [[s] for s in spans if s[1] - s[0] != max_length]
    for group in tqdm(groups, desc="perplexity", disable=not progress, leave=False):
        inputs = torch.stack([ids[b:e] for b, e, _ in group]).to(device)
        labels = inputs.clone()
        for row, (b, e, scored) in enumerate(group):
            labels[row, : e - b - scored] = IGNORE
        nll += _summed_loss(model, inputs, labels)
        count += int((labels[:, 1:] != IGNORE).sum())
    model.train(was_training)
    loss = nll / count
    return {"perplexity": math.exp(loss), "loss": loss, "tokens_scored": count, "windows": len(spans)}


def perplexity_fields(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    split: TextSplit,
    *,
    max_length: int,
    stride: int | None = None,
    max_tokens: int | None = None,
    batch_size: int = 4,
    progress: bool = True,
) -> dict:
    """summary.json's evaluation fields for a text split: ``metrics`` (perplexity, mean loss in nats),
    ``main_metric`` and ``eval_tokens`` (how many tokens were read and scored, and the window rule)."""
    ids = token_stream(tokenizer, split, max_tokens)
    stride = stride or max_length
    result = perplexity(model, ids, max_length=max_length, stride=stride, batch_size=batch_size, progress=progress)
    return {
        "metrics": {"perplexity": result["perplexity"], "loss": result["loss"]},
        "main_metric": "perplexity",
        "eval_tokens": {
            "source": split.source,
            "tokens": len(ids),
            "scored": result["tokens_scored"],
            "windows": result["windows"],
            "max_length": max_length,
            "stride": stride,
            "rule": WINDOW_RULE,
        },
    }
