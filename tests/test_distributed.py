"""Training runs unchanged under torchrun and accelerate launch: two CPU processes (gloo), one model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import cli

LAUNCHERS = {
    "torchrun": [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531"],
    # without GPUs accelerate's multi-process launcher still starts 2 processes; prunekit then picks gloo
    "accelerate": [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        "29532",
    ],
}


def finetune_in_two_processes(launcher: str, command: str, subcommand: str = "finetune") -> dict:
    """Run ``prunekit SUBCOMMAND COMMAND`` under ``launcher`` with 2 CPU processes; its summary.json."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    args = [*LAUNCHERS[launcher], "-m", "prunekit", *subcommand.split(), *command.split()]
    result = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    out = command.split()[command.split().index("--out") + 1]
    return json.loads((Path(out) / "summary.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_two_process_finetune_saves_a_model_that_evaluates(launcher, tiny_bert, sentiment_dir, tmp_path):
    out = tmp_path / "ddp"
    summary = finetune_in_two_processes(
        launcher, f"--model {tiny_bert} --data {sentiment_dir} --out {out} --batch-size 8 --max-length 16"
    )
    # 96 examples, 8 per process, 2 processes -> 6 optimizer steps a pass (one process would take 12);
    # --epochs auto counts steps across processes: 10 passes (the most it picks) for >= 600 steps
    assert summary["train"]["world_size"] == 2 and summary["train"]["epochs"] == 10
    assert summary["train"]["steps"] == 60 and summary["train"]["warmup_ratio"] == 0.1
    evaluation = tmp_path / "e.json"
    assert cli(f"evaluate --model {out} --data {sentiment_dir} --json {evaluation}") == 0
    assert json.loads(evaluation.read_text())["metrics"] == pytest.approx(summary["metrics"])


@pytest.mark.slow
def test_two_process_gradual_pruning_reaches_its_sparsity_with_a_recovery_phase(tiny_bert, sentiment_dir, tmp_path):
    """The schedule ends at 2/3 of the steps the run really takes (12 of 18 with two processes), so the
    final sparsity is reached and the last third trains with it held."""
    summary = finetune_in_two_processes(
        "torchrun",
        f"--model {tiny_bert} --data {sentiment_dir} --out {tmp_path / 'gradual'} --batch-size 8 --max-length 16 "
        "--epochs 3 --prune magnitude --sparsity 0.7 --prune-every 2",
    )
    assert summary["train"]["world_size"] == 2 and summary["train"]["steps"] == 18
    assert summary["sparsity"] == pytest.approx(0.7, abs=1e-3)
    assert summary["train"]["prune_schedule"]["end"] == 12


@pytest.mark.slow
def test_two_process_lora_finetune_merges_and_saves_its_adapter(tiny_bert, sentiment_dir, tmp_path):
    out = tmp_path / "lora"
    summary = finetune_in_two_processes(
        "torchrun",
        f"--model {tiny_bert} --data {sentiment_dir} --out {out} --batch-size 8 --max-length 16 --lora --lora-r 4 "
        "--epochs 1",
    )
    assert summary["train"]["world_size"] == 2 and summary["train"]["steps"] == 6
    assert summary["lora"]["metrics_before_merge"] == pytest.approx(summary["metrics"])
    assert (out / "adapter" / "adapter_model.safetensors").is_file()


@pytest.mark.slow
def test_two_process_adaptive_pruning_agrees_and_hits_its_target(tiny_bert, sentiment_dir, tmp_path):
    """Gate gradients are summed over processes, so both prune the same units and the run completes
    with the target met (6 steps: the schedule ends at step 4)."""
    summary = finetune_in_two_processes(
        "torchrun",
        f"--model {tiny_bert} --data {sentiment_dir} --out {tmp_path / 'adaptive'} --batch-size 8 --max-length 16 "
        "--prune adaptive --heads 0.5 --ffn 0.5 --round-to 1 --prune-every 1 --epochs 1",
    )
    assert summary["train"]["world_size"] == 2
    assert sum(layer["ffn"] for layer in summary["structure"]) == 64
    assert summary["adaptive"]["history"][-1]["step"] == 4


@pytest.mark.slow
def test_two_process_compress_runs_every_stage_and_writes_once(tiny_bert, sentiment_dir, tmp_path):
    """The workflow under torchrun: every stage trains in both processes (same units pruned, the
    teacher the same), the first process alone evaluates and writes."""
    out = tmp_path / "compressed"
    summary = finetune_in_two_processes(
        "torchrun",
        f"--model {tiny_bert} --data {sentiment_dir} --out {out} --stage-steps 4 --batch-size 8 --max-length 16 "
        "--heads 0.5 --ffn 0.5 --round-to 1 --lr 5e-3 --lora-lr 1e-2",
        subcommand="compress",
    )
    assert [row["extra"]["train"]["world_size"] for row in summary["stages"]] == [2, 2, 2]
    assert [row["total_steps"] for row in summary["stages"]] == [4, 8, 12]
    assert sum(layer["ffn"] for layer in summary["stages"][-1]["extra"]["structure"]) == 64
    assert not list(tmp_path.glob(".compressed*"))


@pytest.mark.slow
def test_two_process_language_model_finetune(tiny_llama_lm, text_dir, tmp_path):
    out = tmp_path / "ddp-lm"
    summary = finetune_in_two_processes(
        "torchrun", f"--model {tiny_llama_lm} --data {text_dir} --out {out} --batch-size 4 --max-length 32 --epochs 1"
    )
    # the packed blocks are split over the 2 processes: half the steps of one process
    blocks = summary["train"]["samples"]
    assert summary["train"]["world_size"] == 2 and summary["train"]["steps"] == -(-blocks // 8)
    assert summary["task"] == "lm" and summary["metrics"]["perplexity"] > 0


@pytest.mark.slow
def test_two_process_language_model_distillation_with_adaptive_pruning(tiny_llama_lm, text_dir, tmp_path):
    out = tmp_path / "ddp-lm-kd"
    summary = finetune_in_two_processes(
        "torchrun",
        f"--model {tiny_llama_lm} --data {text_dir} --out {out} --batch-size 4 --max-length 32 --epochs 1 "
        f"--distill-from {tiny_llama_lm} --prune adaptive --heads 0.5 --round-to 1",
    )
    assert summary["train"]["world_size"] == 2 and summary["train"]["distill_from"] == str(tiny_llama_lm)
    assert sum(layer["heads"] for layer in summary["structure"]) == 8  # half of 2 x 8, in both processes alike
    assert summary["task"] == "lm" and summary["metrics"]["perplexity"] > 0


@pytest.mark.slow
def test_two_process_recipe_run_trains_every_stage_in_both_and_writes_once(tiny_bert, sentiment_dir, tmp_path):
    """`prunekit run` under torchrun: training stages train in both processes (one process group for
    the run), the one-shot prune runs in the first; masks are held by the next stage; one report."""
    import yaml

    recipe = tmp_path / "ddp.yaml"
    recipe.write_text(yaml.safe_dump({
        "defaults": {"max_steps": 4, "batch_size": 8, "max_length": 16},
        "stages": [
            {"name": "ft", "method": "finetune"},
            {"name": "prune", "method": "prune-magnitude", "sparsity": 0.5},
            {"name": "recover", "method": "finetune"},
            {"name": "control", "method": "finetune", "role": "control"},
        ],
    }))  # fmt: skip
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    args = [*LAUNCHERS["torchrun"], "-m", "prunekit", "run", str(recipe), "--model", str(tiny_bert), "--data",
            str(sentiment_dir), "--out", str(out)]  # fmt: skip
    result = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    summaries = {
        name: json.loads((out / name / "summary.json").read_text()) for name in ("01-ft", "03-recover", "04-control")
    }
    assert [s["train"]["world_size"] for s in summaries.values()] == [2, 2, 2]
    assert summaries["03-recover"]["sparsity"] == pytest.approx(0.5)
    assert summaries["04-control"]["train"]["steps"] == 8
    assert result.stdout.count("report: ") == 1 and (out / "report.html").is_file()
