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


def _child_peaks(parent_mb: int, child: str) -> dict:
    """Run ``child`` (Python that prints JSON) in a process exec'd by a parent that touched ``parent_mb``."""
    import subprocess
    import sys

    parent = (f"import os, sys; block = bytearray({parent_mb} * 2**20); block[::4096] = b'x' * len(block[::4096]); "
              f"os.execv(sys.executable, [sys.executable, '-c', {child!r}])")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def test_the_peak_is_this_process_s_own_not_a_bigger_parent_s():
    child = ("import json, resource; from prunekit.memory import peak_rss_mb; "
             "print(json.dumps({'ours': peak_rss_mb(), "
             "'ru_maxrss': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))")  # fmt: skip
    alone, under_a_big_parent = _child_peaks(0, child), _child_peaks(1500, child)
    assert under_a_big_parent["ru_maxrss"] > 1500  # the kernel carried the parent's mark over: what this is about
    assert under_a_big_parent["ours"] == pytest.approx(alone["ours"], abs=100)


def test_a_reset_for_one_phase_keeps_the_process_peak():
    child = ("import json; from prunekit.memory import high_water_mb, peak_rss_mb, reset_high_water; "
             "block = bytearray(400 * 2**20); block[::4096] = b'x' * len(block[::4096]); del block; "
             "reset = reset_high_water(); "
             "print(json.dumps({'reset': reset, 'phase': high_water_mb(), 'process': peak_rss_mb()}))")  # fmt: skip
    peaks = _child_peaks(0, child)
    assert peaks["reset"] is True
    assert peaks["process"] > 400
    assert peaks["phase"] < peaks["process"] - 300


def test_activation_estimates_grow_with_tokens_and_shrink_with_checkpointing(tiny_llama_lm):
    from prunekit.memory import activation_bytes

    model, _ = load_model(str(tiny_llama_lm))
    one, two = activation_bytes(model, 256, 32), activation_bytes(model, 512, 32)
    assert two == 2 * one > 0
    assert activation_bytes(model, 512, 32, checkpointed=True) < two  # the layers' inputs + one layer's worth


@pytest.mark.parametrize(
    ("command", "what", "flag"),
    [
        ("finetune --max-steps 1 --batch-size 2 --max-length 32", "training at batch 2 x 32 tokens", "--batch-size"),
        ("prune structured --heads 0.5 --importance taylor --calibration-samples 4", "scoring with --importance taylor",
         "--calibration-length"),
    ],
)  # fmt: skip
def test_a_pass_that_would_not_fit_says_so_in_one_line(command, what, flag, tiny_llama_lm, text_dir, tmp_path,
                                                      monkeypatch, caplog):  # fmt: skip
    import prunekit.memory

    flags = f"--model {tiny_llama_lm} --data {text_dir} --max-eval-tokens 256"
    assert cli(f"{command} {flags} --out {tmp_path / 'roomy'}") == 0
    assert "is available" not in caplog.text  # plenty of memory: no warning
    monkeypatch.setattr(prunekit.memory, "available_mb", lambda: 0.01)
    assert cli(f"{command} {flags} --out {tmp_path / 'tight'}") == 0  # a warning, not a refusal
    warnings = [r.getMessage() for r in caplog.records if "is available" in r.getMessage()]
    assert len(warnings) == 1 and what in warnings[0] and flag in warnings[0]
