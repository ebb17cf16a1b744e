"""The prunekit command end to end on tiny models: finetune -> evaluate -> bench, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForSequenceClassification, BertConfig, GPT2Config

from prunekit.cli import main
from tests.conftest import cli
from tests.tiny import save_tiny_model, tiny_tokenizer

COMMON_KEYS = {"schema_version", "kind", "model", "task", "params_total", "params_nonzero", "size_bytes"}


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, tiny_bert, sentiment_dir):
    out = tmp_path_factory.mktemp("runs") / "ft"
    code = cli(
        f"finetune --model {tiny_bert} --data {sentiment_dir} --out {out} "
        "--epochs 8 --batch-size 16 --lr 5e-3 --max-length 16"
    )
    assert code == 0
    return out


def test_finetune_saves_loadable_model_and_summary(finetuned):
    """save_pretrained format that vanilla transformers loads, plus summary.json in the shared schema."""
    summary = json.loads((finetuned / "summary.json").read_text())
    assert COMMON_KEYS | {"metrics", "main_metric", "train"} <= summary.keys()
    assert summary["kind"] == "finetune" and summary["task"] == "sst2" and summary["main_metric"] == "accuracy"
    assert summary["size_bytes"] == (finetuned / "model.safetensors").stat().st_size
    assert summary["train"]["samples"] == 96 and summary["train"]["steps"] == 48
    model = AutoModelForSequenceClassification.from_pretrained(finetuned)
    assert model.config.id2label == {0: "0", 1: "1"}
    # the synthetic task is easy: a model that learnt nothing would sit near 0.5
    assert summary["metrics"]["accuracy"] >= 0.9


def test_epochs_auto_gives_small_datasets_enough_steps_and_a_warmup(tiny_bert, sentiment_dir, tmp_path):
    from prunekit.training.config import AUTO_MAX_PASSES, AUTO_MIN_STEPS, auto_passes

    assert auto_passes(67_349, 32, world_size=1) == 1  # all of SST-2: one pass is plenty
    assert auto_passes(8_000, 32, world_size=1) == 3
    assert auto_passes(3_667, 32, world_size=1) * 115 >= AUTO_MIN_STEPS  # MRPC: 115 steps a pass
    assert auto_passes(3_667, 16, world_size=2) == auto_passes(3_667, 32, world_size=1)  # steps count batches of all
    assert auto_passes(96, 16, world_size=1) == AUTO_MAX_PASSES
    out = tmp_path / "auto"
    assert cli(f"finetune --model {tiny_bert} --data {sentiment_dir} --out {out} --batch-size 32 --max-length 16") == 0
    train = json.loads((out / "summary.json").read_text())["train"]
    assert (train["epochs"], train["steps"], train["warmup_ratio"]) == (AUTO_MAX_PASSES, 30, 0.1)
    out = tmp_path / "fixed"
    assert cli(f"finetune --model {tiny_bert} --data {sentiment_dir} --out {out} --max-length 16 --epochs 2") == 0
    train = json.loads((out / "summary.json").read_text())["train"]
    assert (train["epochs"], train["steps"], train["warmup_ratio"]) == (2, 6, 0.0)  # as asked, no warm-up


def test_evaluate_reproduces_finetune_metrics(finetuned, sentiment_dir, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert cli(f"evaluate --model {finetuned} --data {sentiment_dir} --max-length 16 --json {out}") == 0
    result = json.loads(out.read_text())
    trained = json.loads((finetuned / "summary.json").read_text())
    assert result["kind"] == "evaluate" and COMMON_KEYS <= result.keys()
    assert result["metrics"] == pytest.approx(trained["metrics"])
    assert result["params_total"] == trained["params_total"]
    assert "accuracy" in capsys.readouterr().out


def test_bench_vs_reports_ratio_from_same_run(finetuned, tmp_path):
    """A 2-layer/32-wide model against an 8-layer/256-wide one: the ratio must show the small one is faster."""
    big = tmp_path / "big"
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=200,
        hidden_size=256,
        num_hidden_layers=8,
        num_attention_heads=4,
        intermediate_size=1024,
        max_position_embeddings=128,
    )
    AutoModelForSequenceClassification.from_config(config).save_pretrained(big)
    tiny_tokenizer().save_pretrained(big)
    out = tmp_path / "bench.json"
    assert (
        cli(
            f"bench --model {finetuned} --vs {big} --batch-size 4 "
            f"--seq-len 32 --repeats 5 --warmup 1 --threads 1 --json {out}"
        )
        == 0
    )
    result = json.loads(out.read_text())
    latency = result["latency_ms"]
    assert {"median", "min", "max", "batch_size", "seq_len", "threads"} <= latency.keys()
    assert latency["min"] <= latency["median"] <= latency["max"] and latency["batch_size"] == 4
    assert result["ratio_vs"] == pytest.approx(result["vs"]["latency_ms"]["median"] / latency["median"], rel=1e-3)
    assert result["ratio_vs"] > 1.5
    assert result["vs"]["flops"] > 10 * result["flops"] > 0
    assert result["task"] == "sst2"


def test_existing_out_is_not_overwritten(finetuned, sentiment_dir, tiny_bert, capsys):
    before = (finetuned / "model.safetensors").read_bytes()
    code = cli(f"finetune --model {tiny_bert} --data {sentiment_dir} --out {finetuned}")
    assert code == 2 and "--overwrite" in capsys.readouterr().err
    assert (finetuned / "model.safetensors").read_bytes() == before


def test_overwrite_replaces_out(tiny_bert, sentiment_dir, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    assert (
        cli(
            f"finetune --model {tiny_bert} --data {sentiment_dir} --out {out} "
            "--overwrite --max-train-samples 16 --max-length 16"
        )
        == 0
    )
    assert not (out / "stale.txt").exists() and (out / "summary.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temp folders left behind"


def test_custom_string_labels_saved_as_id2label_and_reused_by_evaluate(tiny_bert, tmp_path):
    """String labels become id2label/label2id in the config; evaluate maps them back the same way."""
    rows = "".join(f"{'good film' if i % 2 else 'bad film'},{'pos' if i % 2 else 'neg'}\n" for i in range(24))
    data = tmp_path / "reviews.csv"
    data.write_text("review,verdict\n" + rows)
    out = tmp_path / "custom"
    assert (
        cli(
            f"finetune --model {tiny_bert} --data {data} --text-columns review "
            f"--label-column verdict --out {out} --max-length 16"
        )
        == 0
    )
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "neg", "1": "pos"} and config["label2id"] == {"neg": 0, "pos": 1}
    assert (
        cli(
            f"evaluate --model {out} --data {data} --text-columns review "
            f"--label-column verdict --json {tmp_path / 'e.json'}"
        )
        == 0
    )
    assert set(json.loads((tmp_path / "e.json").read_text())["metrics"]) == {"accuracy", "macro_f1"}


def test_regression_finetune_and_evaluate(tmp_path):
    model = save_tiny_model("distilbert", tmp_path / "m")
    lines = "".join(f"{'good' if i % 2 else 'bad'} film\t{'4.5' if i % 2 else '0.5'}\n" for i in range(16))
    (tmp_path / "scores.tsv").write_text("text\tscore\n" + lines)
    out = tmp_path / "reg"
    assert (
        cli(
            f"finetune --model {model} --data {tmp_path / 'scores.tsv'} "
            f"--text-columns text --label-column score --out {out} --max-length 16"
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["main_metric"] == "pearson" and set(summary["metrics"]) == {"pearson", "spearman", "mse"}
    assert json.loads((out / "config.json").read_text())["problem_type"] == "regression"


# ---------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def broken_models(tmp_path_factory, tiny_bert):
    root = tmp_path_factory.mktemp("broken")
    no_weights = root / "no-weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((tiny_bert / "config.json").read_text())
    gpt2 = root / "gpt2"
    AutoModelForSequenceClassification.from_config(
        GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=50, pad_token_id=0)
    ).save_pretrained(gpt2)
    no_tokenizer = root / "no-tokenizer"  # transformers 5 would load it as an all-[UNK] tokenizer
    no_tokenizer.mkdir()
    for name in ("config.json", "model.safetensors"):
        (no_tokenizer / name).write_bytes((tiny_bert / name).read_bytes())
    return {"no-weights": no_weights, "gpt2": gpt2, "no-tokenizer": no_tokenizer}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["evaluate", "--model", "{missing}", "--data", "{data}"], "no such folder"),
        (["evaluate", "--model", "{no-weights}", "--data", "{data}"], "has no weights"),
        (["evaluate", "--model", "{gpt2}", "--data", "{data}"], "'gpt2' is not supported"),
        (["evaluate", "--model", "{no-tokenizer}", "--data", "{data}"], "folder has no tokenizer"),
        (["evaluate", "--model", "{tiny}", "--data", "{missing}"], "no such file or folder"),
        (["evaluate", "--model", "{tiny}", "--data", "{data}", "--task", "sst5"], "unknown task"),
        (
            ["evaluate", "--model", "{tiny}", "--data", "{data}", "--text-columns", "nope", "--label-column", "label"],
            "column 'nope' not found",
        ),
        (["finetune", "--model", "{tiny}", "--data", "{data}", "--out", "{tmp}/x", "--lr", "-1"], "--lr"),
        (["bench", "--model", "{gpt2}"], "not supported"),
    ],
)
def test_bad_input_exits_2_with_one_line(argv, message, tiny_bert, sentiment_dir, broken_models, tmp_path, capsys):
    """One line on stderr naming the flag or file and the expectation; exit code 2; no traceback."""
    fill = {
        "missing": str(tmp_path / "missing"),
        "data": str(sentiment_dir),
        "tiny": str(tiny_bert),
        "tmp": str(tmp_path),
        **{k: str(v) for k, v in broken_models.items()},
    }
    code = main([part.format(**fill) for part in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_console_command_prints_no_traceback(tmp_path):
    """The real entry point, as a user runs it."""
    result = subprocess.run(
        [sys.executable, "-m", "prunekit", "evaluate", "--model", str(tmp_path / "none"), "--data", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("prunekit evaluate: error: --model")
    assert "Traceback" not in result.stderr


def test_the_cli_leaves_the_process_group_before_it_returns():
    """Under torchrun a group left to the interpreter's exit aborted a process now and then: the command
    line leaves it itself."""
    import socket

    import torch.distributed as dist

    from prunekit.cli import main

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        assert main(["recipes"]) == 0
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
