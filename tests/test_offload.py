"""Models bigger than memory, evaluated and timed through accelerate's big-model loading (--max-memory):
the same metrics as the model loaded whole, with most of its weights left on disk."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from tests.conftest import cli
from tests.tiny import tiny_tokenizer

OFFLOAD = "--max-memory 20KB"  # smaller than any layer: every module on disk


def _evaluate(model, data, tmp_path, flags: str = "", extra: str = "") -> dict:
    out = tmp_path / f"eval{len(list(tmp_path.iterdir()))}.json"
    assert cli(f"evaluate --model {model} --data {data} {extra} {flags} --json {out}") == 0
    return json.loads(out.read_text())


def test_perplexity_of_an_offloaded_model_equals_the_whole_model_s(tiny_llama_lm, text_dir, tmp_path):
    extra = "--max-length 32 --max-eval-tokens 512"
    whole = _evaluate(tiny_llama_lm, text_dir, tmp_path, extra=extra)
    offloaded = _evaluate(tiny_llama_lm, text_dir, tmp_path, OFFLOAD, extra)
    assert offloaded["metrics"]["perplexity"] == pytest.approx(whole["metrics"]["perplexity"], rel=1e-5)
    assert offloaded["placement"] == {"disk": 1} and "placement" not in whole
    assert offloaded["params_nonzero"] == whole["params_nonzero"]  # counted from the checkpoint on disk


def test_task_metrics_of_an_offloaded_classifier_equal_the_whole_model_s(tiny_bert, sentiment_dir, tmp_path):
    whole = _evaluate(tiny_bert, sentiment_dir, tmp_path)
    offloaded = _evaluate(tiny_bert, sentiment_dir, tmp_path, OFFLOAD)
    assert offloaded["metrics"] == pytest.approx(whole["metrics"])
    assert "disk" in offloaded["placement"]


def test_generation_is_timed_with_the_weights_offloaded(tiny_llama_lm, tmp_path):
    out = tmp_path / "bench.json"
    flags = "--generate --prompt-len 8 --new-tokens 4 --repeats 2 --warmup 1"
    assert cli(f"bench --model {tiny_llama_lm} {flags} {OFFLOAD} --json {out}") == 0
    summary = json.loads(out.read_text())
    assert summary["placement"] == {"disk": 1} and summary["generate"]["decode_tokens_per_s"] > 0


@pytest.mark.parametrize(
    ("flags", "message"),
    [("--offload-folder /tmp/x", "only with --max-memory"), ("--max-memory lots", "expected a size")],
)
def test_offload_flags_are_checked(flags, message, tiny_llama_lm, text_dir, capsys):
    assert cli(f"evaluate --model {tiny_llama_lm} --data {text_dir} {flags}") == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_an_offloaded_evaluation_holds_far_less_than_the_model(text_dir, tmp_path):
    """A 35M-parameter model (138 MB): evaluated in a child process whole and offloaded; the offloaded
    peak (VmHWM) is lower by at least 40 % of the weights' bytes."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=512, intermediate_size=2048, num_hidden_layers=8, num_attention_heads=8,
                         num_key_value_heads=8, vocab_size=1000, tie_word_embeddings=False)  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    model.save_pretrained(tmp_path / "model")
    tiny_tokenizer().save_pretrained(tmp_path / "model")
    del model
    peaks = {}
    for name, flags in (("whole", ""), ("offloaded", "--max-memory 10MB")):
        out = tmp_path / f"{name}.json"
        command = (f"evaluate --model {tmp_path / 'model'} --data {text_dir} --max-length 64 --max-eval-tokens 1024 "
                   f"{flags} --json {out}")  # fmt: skip
        subprocess.run([sys.executable, "-m", "prunekit", *command.split()], check=True, capture_output=True)
        peaks[name] = json.loads(out.read_text())["peak_rss_mb"] * 2**20
    assert peaks["offloaded"] < peaks["whole"] - 0.4 * weights
