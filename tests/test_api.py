"""The Python API: the stages on in-memory models give what the commands give, byte for byte."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import prunekit
from prunekit.errors import ConfigError
from prunekit.models import load_model
from tests.conftest import cli

VOLATILE = {"model", "model_path", "size_bytes", "prune_seconds", "peak_rss_mb"}  # where and how fast, not what


def _same_folder_weights(a, b) -> None:
    left, right = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert left.keys() == right.keys()
    for name, tensor in left.items():
        assert torch.equal(tensor, right[name]), name


def _same_summary(api: dict, command: dict) -> None:
    assert {k: v for k, v in api.items() if k not in VOLATILE} == {
        k: v for k, v in command.items() if k not in VOLATILE
    }


@pytest.mark.parametrize(
    "kind, flags, options",
    [
        ("bert", "--sparsity 0.6", {"sparsity": 0.6}),
        ("bert", "--importance wanda --pattern 2:4", {"importance": "wanda", "pattern": "2:4"}),
        ("llama", "--importance sparsegpt --calibration-samples 8 --calibration-length 32",
         {"importance": "sparsegpt", "calibration_samples": 8, "calibration_length": 32}),
    ],
)  # fmt: skip
def test_prune_magnitude_in_python_is_the_command(kind, flags, options, tiny_bert, tiny_llama_lm, sentiment_dir,
                                                  text_dir, tmp_path):  # fmt: skip
    folder, data = (tiny_bert, sentiment_dir) if kind == "bert" else (tiny_llama_lm, text_dir)
    assert cli(f"prune magnitude --model {folder} --data {data} --max-length 32 {flags} --out {tmp_path / 'cli'}") == 0
    task = prunekit.data.tasks.LM_TASK if kind == "llama" else None
    model, tokenizer = load_model(str(folder), task)
    result = prunekit.prune_magnitude(model, tokenizer, data=str(data), max_length=32, out=tmp_path / "api", **options)
    _same_folder_weights(tmp_path / "api", tmp_path / "cli")
    _same_summary(result.summary, json.loads((tmp_path / "cli" / "summary.json").read_text()))
    assert result.model is model and result.masks.sparsity() == pytest.approx(result.summary["sparsity"])


def test_prune_structured_in_python_is_the_command(tiny_bert, sentiment_dir, tmp_path):
    flags = "--heads 0.5 --ffn 0.5 --calibration-samples 32 --max-length 16"
    assert cli(f"prune structured --model {tiny_bert} --data {sentiment_dir} {flags} --out {tmp_path / 'cli'}") == 0
    model, tokenizer = load_model(str(tiny_bert))
    result = prunekit.prune_structured(model, tokenizer, data=str(sentiment_dir), heads=0.5, ffn=0.5,
                                       calibration_samples=32, max_length=16, out=tmp_path / "api")  # fmt: skip
    _same_folder_weights(tmp_path / "api", tmp_path / "cli")
    _same_summary(result.summary, json.loads((tmp_path / "cli" / "summary.json").read_text()))
    assert result.summary["params_total"] < result.summary["params_before"]


def test_calibration_as_texts_batches_or_a_path(tiny_llama_lm, text_dir):
    """Three ways to hand over calibration data; each is used (the kept weights differ from magnitude's)."""
    lines = (text_dir / "train.txt").read_text().splitlines()[:6]
    _, tokenizer = load_model(str(tiny_llama_lm), prunekit.data.tasks.LM_TASK)
    batches = [tokenizer(line, return_tensors="pt") for line in lines]
    results = {}
    for name, calibration in (("texts", lines), ("batches", batches), ("path", str(text_dir))):
        fresh, _ = load_model(str(tiny_llama_lm), prunekit.data.tasks.LM_TASK)
        result = prunekit.prune_magnitude(fresh, tokenizer, importance="wanda", calibration=calibration,
                                          calibration_samples=4, calibration_length=16)  # fmt: skip
        results[name] = result.masks
    assert results["texts"].masks.keys() == results["batches"].masks.keys()
    assert all(torch.equal(results["texts"].masks[k], results["batches"].masks[k]) for k in results["texts"].masks)
    plain = prunekit.prune_magnitude(load_model(str(tiny_llama_lm))[0]).masks
    assert any(not torch.equal(plain.masks[k], results["path"].masks[k]) for k in plain.masks)


def test_api_errors_name_the_option(tiny_bert):
    model, tokenizer = load_model(str(tiny_bert))
    with pytest.raises(ConfigError, match=r"sparsty: not an option of prune-magnitude \(did you mean 'sparsity'\?\)"):
        prunekit.prune_magnitude(model, sparsty=0.5)
    with pytest.raises(ConfigError, match=r"--sparsity 1\.5: expected a number in"):
        prunekit.prune_magnitude(model, sparsity=1.5)
    with pytest.raises(ConfigError, match="--importance wanda needs calibration data"):
        prunekit.prune_magnitude(model, importance="wanda")
    unlabelled = [tokenizer("a good film", return_tensors="pt")]
    with pytest.raises(ConfigError, match="taylor scores need labelled batches"):
        prunekit.prune_structured(model, tokenizer, calibration=unlabelled, heads=0.5)


def test_evaluate_in_python_is_the_command(tiny_bert, sentiment_dir, tmp_path):
    out = tmp_path / "e.json"
    assert cli(f"evaluate --model {tiny_bert} --data {sentiment_dir} --max-length 16 --json {out}") == 0
    model, tokenizer = load_model(str(tiny_bert))
    summary = prunekit.evaluate(model, tokenizer, str(sentiment_dir), max_length=16)
    command = json.loads(out.read_text())
    assert summary["metrics"] == command["metrics"] and summary["eval_samples"] == command["eval_samples"]


# ---------------------------------------------------------------- one code path: command, recipe, Python

TRAIN = {"max_steps": 4, "batch_size": 8, "max_length": 16}
SAME_EVERYWHERE = [  # (stage, options): run alone through the CLI and as a one-stage recipe, same weights
    ("finetune", {}),
    ("adaptive", {"heads": 0.5, "ffn": 0.5, "lr": 1e-3}),
    ("lora", {"lr": 1e-3}),
    ("prune-structured", {"heads": 0.5, "ffn": 0.5, "calibration_samples": 16, "max_length": 16}),
    ("prune-magnitude", {"importance": "wanda", "sparsity": 0.5, "max_length": 16}),
    ("distill", {"teacher": "@input", "student_layers": 1, "alpha_hidden": 1.0}),
    ("lottery", {"rounds": 1, "steps_per_round": 2, "no_controls": True, "max_length": 16}),
]


def _argv(method: str, options: dict, model, data, out) -> str:
    from prunekit.recipes.schema import METHODS

    spec = METHODS[method]
    words = [*spec.command, *spec.fixed_argv()]
    if not (method == "distill" and "student_layers" in options):
        words += [spec.chain_flag, str(model)]
    for key, value in options.items():
        words += spec.options[key].argv(str(model) if value == "@input" else value)
    return " ".join([*words, "--data", str(data), "--out", str(out)])


@pytest.mark.parametrize("method, options", SAME_EVERYWHERE, ids=[m for m, _ in SAME_EVERYWHERE])
def test_a_stage_alone_and_in_a_recipe_make_the_same_weights(method, options, tiny_bert, sentiment_dir, tmp_path):
    from prunekit.recipes.schema import METHODS

    options = {**{k: v for k, v in TRAIN.items() if k in METHODS[method].options}, **options}
    assert cli(_argv(method, options, tiny_bert, sentiment_dir, tmp_path / "alone")) == 0
    recipe = {"stages": [{"name": "only", "method": method, **options}]}
    run = prunekit.run(recipe, model=str(tiny_bert), data=str(sentiment_dir), out=tmp_path / "run")
    made = tmp_path / "run" / "01-only"
    if method == "lottery":
        made, alone = made / "round-1", tmp_path / "alone" / "round-1"
    else:
        alone = tmp_path / "alone"
    _same_folder_weights(made, alone)
    assert run.stages[0]["name"] == "only" and run.stages[0]["method"] == method


def test_finetune_and_distill_in_python_make_the_commands_weights(tiny_bert, sentiment_dir, tmp_path):
    from transformers import set_seed

    from prunekit.data import load_task_data

    flags = "--max-steps 4 --batch-size 8 --max-length 16"
    assert cli(f"finetune --model {tiny_bert} --data {sentiment_dir} {flags} --out {tmp_path / 'cli'}") == 0
    set_seed(42)  # the command initialises the head from its --seed, as here
    model, tokenizer = load_model(str(tiny_bert), load_task_data(str(sentiment_dir)).task)
    result = prunekit.finetune(model, tokenizer, str(sentiment_dir), max_steps=4, batch_size=8, max_length=16,
                               out=tmp_path / "api")  # fmt: skip
    _same_folder_weights(tmp_path / "api", tmp_path / "cli")
    assert result.summary["train"]["steps"] == 4

    teacher = tmp_path / "cli"
    assert cli(f"distill --teacher {teacher} --student {tiny_bert} --data {sentiment_dir} {flags} "
               f"--out {tmp_path / 'distilled'}") == 0  # fmt: skip
    teacher_model, _ = load_model(str(teacher))
    set_seed(42)
    student, _ = load_model(str(tiny_bert))
    result = prunekit.distill(student, teacher_model, tokenizer, str(sentiment_dir), max_steps=4, batch_size=8,
                              max_length=16, out=tmp_path / "api-distilled")  # fmt: skip
    _same_folder_weights(tmp_path / "api-distilled", tmp_path / "distilled")
    assert set(result.summary["teacher_metrics"]) == {"accuracy"}


def test_a_recipe_runs_in_this_process_and_a_failing_stage_names_itself(
    tiny_bert, sentiment_dir, tmp_path, monkeypatch
):
    """No child process: every stage is a call. A stage's error comes back as an exception naming it."""
    import multiprocessing
    import os
    import subprocess

    from prunekit.errors import PrunekitError

    def forbidden(*args, **kwargs):
        raise AssertionError("a recipe started a process")

    monkeypatch.setattr(subprocess.Popen, "__init__", forbidden)
    monkeypatch.setattr(os, "fork", forbidden)
    monkeypatch.setattr(os, "posix_spawn", forbidden)
    monkeypatch.setattr(multiprocessing.Process, "start", forbidden)
    recipe = {"defaults": TRAIN, "stages": [{"name": "tune", "method": "finetune"},
                                            {"name": "cut", "method": "prune-structured", "heads": 0.5,
                                             "calibration_samples": 16}]}  # fmt: skip
    result = prunekit.run(recipe, model=str(tiny_bert), data=str(sentiment_dir), out=tmp_path / "run")
    assert [row["name"] for row in result.stages] == ["tune", "cut"]
    assert result.stages[1]["params"] < result.stages[0]["params"] and result.report[0].is_file()
    failing = {"stages": [{"name": "tune", "method": "finetune", **TRAIN, "lr": 1e30, "weight_decay": 0}]}
    with pytest.raises(PrunekitError, match=r"stage 01-tune stopped: the training loss became"):
        prunekit.run(failing, model=str(tiny_bert), data=str(sentiment_dir), out=tmp_path / "failing")
