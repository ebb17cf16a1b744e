"""Training memory: activation checkpointing (--gradient-checkpointing) and the training loop's own peak."""

from __future__ import annotations

import json

import pytest

import prunekit
from prunekit.models import load_model
from tests.conftest import cli

SHORT = "--max-steps 4 --batch-size 2 --max-length 32 --max-eval-tokens 256 --lr 1e-3"


@pytest.mark.parametrize("lora", ["", "--lora --lora-dropout 0.1"])
def test_checkpointing_trains_the_same_model_and_records_the_training_peak(lora, tiny_llama_lm, text_dir, tmp_path):
    summaries = {}
    for name, flag in (("plain", ""), ("checkpointed", "--gradient-checkpointing")):
        out = tmp_path / name
        assert cli(f"finetune --model {tiny_llama_lm} --data {text_dir} {SHORT} {lora} {flag} --out {out}") == 0
        summaries[name] = json.loads((out / "summary.json").read_text())
    plain, checkpointed = summaries["plain"], summaries["checkpointed"]
    losses = [loss for _, loss in plain["train"]["loss_curve"]]
    assert [loss for _, loss in checkpointed["train"]["loss_curve"]] == pytest.approx(losses, rel=1e-4)
    assert checkpointed["metrics"]["perplexity"] == pytest.approx(plain["metrics"]["perplexity"], rel=1e-4)
    memory = checkpointed["train"]["training_memory"]
    assert memory["rss_reset"] is True  # Linux
    assert 0 < memory["peak_rss_mb"] <= checkpointed["train"]["peak_rss_mb"] + 1  # the process peak covers it


def test_the_option_turns_checkpointing_on_in_the_trainer(tiny_llama_lm, text_dir):
    model, tokenizer = load_model(str(tiny_llama_lm))
    result = prunekit.finetune(model, tokenizer, str(text_dir), max_steps=1, batch_size=2, max_length=32,
                               gradient_checkpointing=True)  # fmt: skip
    assert result.model.is_gradient_checkpointing
    model, tokenizer = load_model(str(tiny_llama_lm))
    assert not prunekit.finetune(model, tokenizer, str(text_dir), max_steps=1, batch_size=2,
                                 max_length=32).model.is_gradient_checkpointing  # fmt: skip
