"""Tiny randomly initialised models of each supported family, saved as HF folders."""

from __future__ import annotations

import string
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    BertConfig,
    BertTokenizer,
    DistilBertConfig,
    LlamaConfig,
    MistralConfig,
    Qwen2Config,
    RobertaConfig,
)

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PIECES = list(string.ascii_lowercase + string.digits + string.punctuation)
WORDS = ["the", "a", "movie", "film", "good", "bad", "great", "awful", "not", "is", "was", "very"]
VOCAB = SPECIAL + WORDS + PIECES + [f"##{p}" for p in PIECES]


def tiny_tokenizer() -> BertTokenizer:
    """A lowercase WordPiece tokenizer that can spell any ASCII text with ~200 tokens."""
    return BertTokenizer(vocab={token: i for i, token in enumerate(VOCAB)}, do_lower_case=True)


def tiny_config(family: str, num_labels: int = 2):
    common = dict(vocab_size=len(VOCAB), num_labels=num_labels, pad_token_id=0)
    if family == "bert":
        return BertConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=128,
            **common,
        )
    if family == "roberta":  # RoBERTa offsets positions by padding_idx + 1
        return RobertaConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=160,
            **common,
        )
    if family == "distilbert":
        return DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=128, **common)
    decoder = dict(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=2,
        intermediate_size=96,
        max_position_embeddings=128,
        **common,
    )
    if family == "llama":
        return LlamaConfig(**decoder)
    if family == "mistral":
        return MistralConfig(**decoder)
    if family == "qwen2":
        return Qwen2Config(**decoder)
    raise ValueError(family)


FAMILIES = ("bert", "roberta", "distilbert", "llama", "mistral", "qwen2")


def tiny_model(family: str = "bert", seed: int = 0, num_labels: int = 2):
    """A tiny random ``family`` model with a sequence-classification head."""
    torch.manual_seed(seed)
    return AutoModelForSequenceClassification.from_config(tiny_config(family, num_labels))


def save_tiny_model(family: str, folder: Path, num_labels: int = 2, seed: int = 0) -> Path:
    """Write a tiny random ``family`` model with its tokenizer to ``folder``."""
    model = tiny_model(family, seed, num_labels)
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def save_tiny_causal_lm(family: str, folder: Path, seed: int = 0) -> Path:
    """Write a tiny random causal language model (``llama``, ``mistral``, ``qwen2``) with its tokenizer."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family))
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def tiny_text(paragraphs: int, seed: int = 0) -> str:
    """Paragraphs of the tiny vocabulary's words, one a line (the Brown layout)."""
    import random

    rng = random.Random(seed)
    return "\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 20))) + " ." for _ in range(paragraphs))
