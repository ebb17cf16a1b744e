"""Masked LoRA recovery for one-shot sparse decoders: the built-in recipes sparsegpt-lora, wanda-lora and
sparsegpt-2of4-lora on a tiny Llama and a text corpus."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from prunekit.pruning.masks import MaskSet
from tests.conftest import cli

SMALL = (
    "--max-steps 3 --max-length 32 --set defaults.max_eval_tokens=512 --set stages[1].calibration_samples=6 "
    "--set stages[1].calibration_length=32 --set stages[2].batch_size=2"
)


@pytest.mark.parametrize("recipe", ["sparsegpt-lora", "wanda-lora", "sparsegpt-2of4-lora"])
def test_recovery_trains_the_kept_weights_and_merges_with_exactly_the_same_zeros(recipe, tiny_llama_lm, text_dir,
                                                                                 tmp_path):  # fmt: skip
    out = tmp_path / "run"
    assert cli(f"run {recipe} --model {tiny_llama_lm} --data {text_dir} --out {out} {SMALL}") == 0
    pruned, recovered = out / "02-prune", out / "03-recover"
    masks = MaskSet.load(pruned)
    before, after = load_file(str(pruned / "model.safetensors")), load_file(str(recovered / "model.safetensors"))
    assert len(masks) == 14  # every projection of the 2 layers
    for name, keep in masks.masks.items():
        assert bool((after[name][~keep] == 0).all()) and bool((after[name][keep] != 0).all()), name
    assert any(not torch.equal(after[n][keep], before[n][keep]) for n, keep in masks.masks.items())
    if "2of4" in recipe:
        for name in masks.masks:
            assert bool(((after[name] != 0).reshape(-1, 4).sum(1) <= 2).all()), name
    summary = json.loads((recovered / "summary.json").read_text())
    dense = json.loads((out / "01-dense" / "summary.json").read_text())
    assert summary["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert summary["lora"]["metrics_before_merge"]["perplexity"] == pytest.approx(summary["metrics"]["perplexity"])
    assert summary["train"]["steps"] == 3
    assert dense["params_nonzero"] > summary["params_nonzero"]  # the first stage evaluated the dense input
    assert dense["eval_tokens"] == summary["eval_tokens"]
