"""Vocabulary pruning: keep only the tokens a corpus uses (plus special tokens).

The embedding matrix loses the other rows and the tokenizer is rewritten to match, ids renumbered in
their original order. For WordPiece tokenizers (BERT, DistilBERT, MiniLM) every sentence of the corpus
tokenises exactly as before: greedy longest-match only ever picks pieces the corpus already used, all
of which are kept. Text outside the corpus may fall back to shorter pieces or ``[UNK]``.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import nn
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from prunekit.errors import ConfigError

SUPPORTED_MODELS = ("WordPiece",)


def corpus_token_ids(
    tokenizer: PreTrainedTokenizerBase, texts: Iterable[str | tuple[str, str]], batch_size: int = 1000
) -> set[int]:
    """Ids of every token the tokenizer produces on ``texts`` (strings, or pairs of strings)."""
    seen: set[int] = set()
    batch: list = []

    def flush() -> None:
        pairs = [t if isinstance(t, tuple) else (t, None) for t in batch]
        firsts = [a for a, _ in pairs]
        seconds = [b for _, b in pairs] if any(b is not None for _, b in pairs) else None
        for ids in tokenizer(firsts, seconds)["input_ids"]:
            seen.update(ids)
        batch.clear()

    for text in texts:
        batch.append(text)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    return seen


def _remap_tokenizer_json(state: dict, old_to_new: dict[int, int]) -> dict:
    model = state["model"]
    if model.get("type") not in SUPPORTED_MODELS:
        raise ConfigError(
            f"--vocab-from: vocabulary pruning supports {', '.join(SUPPORTED_MODELS)} tokenizers "
            f"(BERT, DistilBERT, MiniLM); this model's tokenizer is {model.get('type')}"
        )
    model["vocab"] = {token: old_to_new[i] for token, i in model["vocab"].items() if i in old_to_new}
    state["added_tokens"] = [
        {**token, "id": old_to_new[token["id"]]} for token in state.get("added_tokens", []) if token["id"] in old_to_new
    ]
    processor = state.get("post_processor") or {}
    processors = processor.get("processors", [processor])  # a Sequence of processors, or one
    for proc in processors:
        for special in (proc.get("special_tokens") or {}).values():  # TemplateProcessing
            special["ids"] = [old_to_new[i] for i in special["ids"]]
        for key in ("cls", "sep"):  # BertProcessing / RobertaProcessing: [token, id]
            if isinstance(proc.get(key), list):
                proc[key][1] = old_to_new[proc[key][1]]
    return state


def _rewrite_tokenizer(tokenizer: PreTrainedTokenizerBase, old_to_new: dict[int, int]) -> PreTrainedTokenizerBase:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ConfigError("--vocab-from: vocabulary pruning needs a fast (tokenizers-backed) tokenizer")
    state = _remap_tokenizer_json(json.loads(backend.to_str()), old_to_new)
    new_vocab = sorted(state["model"]["vocab"], key=state["model"]["vocab"].get)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        Path(tmp, "tokenizer.json").write_text(json.dumps(state, ensure_ascii=False))
        if Path(tmp, "vocab.txt").exists():
            Path(tmp, "vocab.txt").write_text("".join(token + "\n" for token in new_vocab), encoding="utf-8")
        return AutoTokenizer.from_pretrained(tmp)


def prune_vocabulary(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, keep_ids: Iterable[int]
) -> tuple[PreTrainedTokenizerBase, list[int]]:
    """Keep ``keep_ids`` (special tokens are always kept) in the model's word embeddings, in place.

    Returns the rewritten tokenizer and the kept old ids (new id ``i`` is old id ``kept[i]``).
    """
    embeddings: nn.Embedding = model.get_input_embeddings()
    keep = sorted(set(keep_ids) | set(tokenizer.all_special_ids) | _added_token_ids(tokenizer))
    keep = [i for i in keep if 0 <= i < embeddings.num_embeddings]
    old_to_new = {old: new for new, old in enumerate(keep)}
    new_tokenizer = _rewrite_tokenizer(tokenizer, old_to_new)
    index = torch.tensor(keep, dtype=torch.long, device=embeddings.weight.device)
    embeddings.weight = nn.Parameter(embeddings.weight.detach().index_select(0, index))
    embeddings.num_embeddings = len(keep)
    if embeddings.padding_idx is not None:
        embeddings.padding_idx = old_to_new.get(embeddings.padding_idx)
    config = model.config
    config.vocab_size = len(keep)
    for name, value in config.to_dict().items():
        if name.endswith("_token_id") and isinstance(value, int):
            setattr(config, name, old_to_new.get(value))
    return new_tokenizer, keep


def _added_token_ids(tokenizer: PreTrainedTokenizerBase) -> set[int]:
    return set(getattr(tokenizer, "added_tokens_decoder", {}) or {})


def vocabulary_report(before: int, kept: Sequence[int], hidden_size: int) -> dict[str, int]:
    return {
        "vocab_before": before,
        "vocab_after": len(kept),
        "embedding_params_removed": (before - len(kept)) * hidden_size,
    }
