"""The recommended workflow (`prunekit compress`) and the ordering study on tiny models: stages,
equal step budgets, exact targets, resuming, latency targets."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from prunekit.errors import ConfigError
from prunekit.methods import speed
from prunekit.models import load_model
from prunekit.recipes.orders import stages_of
from prunekit.stages import STAGES
from tests.conftest import cli, tree_digest
from tests.tiny import save_tiny_model, tiny_tokenizer

TRAIN = "--stage-steps 8 --batch-size 16 --max-length 16 --lr 5e-3 --lora-lr 1e-2 --round-to 1"


def _summary(folder) -> dict:
    return json.loads((folder / "summary.json").read_text())


def interrupt_in_stage(monkeypatch, method: str = "adaptive"):
    """Make the run stop (as Ctrl-C would) when it starts the stage of ``method`` (the joint order's
    pruned stage); returns the function that lets it run again."""
    import dataclasses

    original = STAGES[method]

    def interrupted(context, config):
        raise KeyboardInterrupt

    monkeypatch.setitem(STAGES, method, dataclasses.replace(original, run=interrupted))
    return lambda: monkeypatch.setitem(STAGES, method, original)


def _logits(folder) -> torch.Tensor:
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    batch = tiny_tokenizer()(["a great film", "an awful film"], padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits


def test_every_order_trains_the_same_steps_in_three_stage_lengths():
    for order in ("joint", "lora-prune", "prune-lora"):
        specs = stages_of(order, 10)
        assert sum(spec.steps for spec in specs) == 30, order
    assert [s.kind for s in stages_of("joint", 1)] == ["lora", "lora", "full"]
    assert stages_of("joint", 1)[1].adaptive and stages_of("joint", 1)[2].distill
    assert stages_of("prune-lora", 1)[0].importance == "magnitude"  # no task labels before any training
    assert [s.kind for s in stages_of("joint", 1, prune_with="full")] == ["lora", "full", "full"]


def test_the_teacher_lr_and_layerwise_distillation_reach_their_stages():
    from prunekit.recipes.orders import Target, WorkflowConfig, order_recipe

    config = WorkflowConfig(target=Target(heads=0.5), stage_steps=4, teacher_lr=2e-3, alpha_hidden=1.0,
                            hidden_loss="cosine")  # fmt: skip
    teacher, pruned, final = order_recipe(config, {}).stages
    assert teacher.options["lr"] == 2e-3 and pruned.options["lr"] == config.lora_lr == 5e-4
    for stage in (pruned, final):
        assert (stage.options["alpha_hidden"], stage.options["hidden_loss"]) == (1.0, "cosine")
    default = order_recipe(WorkflowConfig(target=Target(heads=0.5), stage_steps=4), {}).stages
    assert default[0].options["lr"] == 5e-4 and "alpha_hidden" not in default[1].options
    with pytest.raises(ConfigError, match="has no effect without --alpha-hidden"):
        from prunekit.options import check_effective

        check_effective(WorkflowConfig(target=Target(heads=0.5), hidden_loss="cosine"), {"hidden_loss"})


def test_compress_runs_the_workflow_and_writes_every_stage(tiny_bert, sentiment_dir, tmp_path):
    out = tmp_path / "compressed"
    target = "--heads 0.5 --ffn 0.5 --control"
    assert cli(f"compress --model {tiny_bert} --data {sentiment_dir} --out {out} {TRAIN} {target}") == 0
    summary = _summary(out)
    stages = {row["stage"]: row for row in summary["stages"]}
    assert list(stages) == ["teacher", "pruned", "final"]
    assert [row["total_steps"] for row in summary["stages"]] == [8, 16, 24]
    assert summary["control"]["steps"] == 24  # the equal-budget dense control
    trainable = [stages[name]["extra"]["train"]["trainable_params"] for name in ("teacher", "final")]
    assert trainable[0] < trainable[1]  # LoRA, then full fine-tuning (PEFT's frozen base thawed after merging)
    assert summary["metrics"]["accuracy"] >= 0.9  # the easy synthetic task is learnt
    for name in ("teacher", "pruned", "final", "control"):
        assert _summary(out / name)["row"]["stage"] == name
        assert set(_summary(out)["stages"][0]["extra"]["speedup"]) == {"32x128", "1x128"}
    assert (out / "teacher" / "adapter" / "adapter_config.json").is_file()  # PEFT format
    final = AutoModelForSequenceClassification.from_pretrained(out / "final")
    structure = stages["final"]["extra"]["structure"]
    heads = [layer.attention.self.query.out_features // 8 for layer in final.bert.encoder.layer]
    neurons = [layer.intermediate.dense.out_features for layer in final.bert.encoder.layer]
    assert sum(heads) == 4 and sum(neurons) == 64  # half of 2 x 4 heads and of 2 x 64 neurons
    assert [layer["ffn"] for layer in structure] == neurons
    assert [layer["ffn"] for layer in stages["teacher"]["extra"]["structure"]] == [64, 64]
    assert summary["params_total"] < summary["stages"][0]["params_total"]
    assert summary["metrics"] == stages["final"]["metrics"]
    relative = summary["relative"]
    teacher_metric = stages["teacher"]["metrics"]["accuracy"]
    assert relative["teacher"] == pytest.approx(summary["metrics"]["accuracy"] / teacher_metric, abs=1e-4)
    assert not list(tmp_path.glob(".compressed*"))  # the staging folder was published


def test_compress_resumes_after_its_last_finished_stage(tiny_bert, sentiment_dir, tmp_path, monkeypatch):
    """A run killed in its second stage resumes from the saved teacher and ends with the same model as
    a run that was never interrupted (every stage seeds itself)."""
    whole = tmp_path / "whole"
    assert cli(f"compress --model {tiny_bert} --data {sentiment_dir} --out {whole} {TRAIN} --heads 0.5") == 0

    out = tmp_path / "resumed"
    resume_training = interrupt_in_stage(monkeypatch)
    assert cli(f"compress --model {tiny_bert} --data {sentiment_dir} --out {out} {TRAIN} --heads 0.5") == 130
    staging = tmp_path / ".resumed.partial"
    assert (staging / "teacher" / "summary.json").is_file() and not out.exists()
    teacher = (staging / "teacher" / "model.safetensors").read_bytes()
    resume_training()
    assert cli(f"compress --model {tiny_bert} --data {sentiment_dir} --out {out} {TRAIN} --heads 0.5") == 2  # kept
    assert cli(f"compress --model {tiny_bert} --data {sentiment_dir} --out {out} {TRAIN} --heads 0.4 --resume") == 2
    assert cli(f"compress --model {tiny_bert} --data {sentiment_dir} --out {out} {TRAIN} --heads 0.5 --resume") == 0
    assert (out / "teacher" / "model.safetensors").read_bytes() == teacher  # kept, not trained again
    torch.testing.assert_close(_logits(out / "final"), _logits(whole / "final"), atol=1e-5, rtol=0)


def test_compress_on_a_gqa_llama_keeps_whole_kv_groups(sentiment_dir, tmp_path):
    model = save_tiny_model("llama", tmp_path / "llama")
    out = tmp_path / "out"
    assert cli(f"compress --model {model} --data {sentiment_dir} --out {out} {TRAIN} --heads 0.5 --ffn 0.5") == 0
    structure = _summary(out)["stages"][1]["extra"]["structure"]
    kv_heads = load_model(str(model))[0].config.num_key_value_heads
    assert sum(layer["heads"] for layer in structure) == 8  # half of 2 x 8 query heads
    assert sum(layer["ffn"] for layer in structure) == 96
    assert all(layer["heads"] % kv_heads == 0 for layer in structure)  # every KV group keeps as many
    assert _logits(out / "final").shape == (2, 2)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ("", "pass a target"),
        ("--speedup 2 --heads 0.5", "--speedup sets the widths"),
        ("--speedup 1", "--speedup 1: expected a number > 1"),
        ("--heads 0", "--heads 0"),
    ],
)
def test_compress_refuses_bad_targets_before_training(flags, message, tiny_bert, sentiment_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli(f"compress --model {tiny_bert} --data {sentiment_dir} --out {out} {TRAIN} {flags}") == 2
    assert message in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_keep_fraction_for_a_speedup_interpolates_the_timed_widths(tiny_bert, monkeypatch):
    model, _ = load_model(str(tiny_bert))
    copy = speed.uniform_copy(model, 0.5, round_to=1)
    assert [layer.intermediate.dense.out_features for layer in copy.bert.encoder.layer] == [32, 32]
    assert [layer.attention.self.query.out_features for layer in copy.bert.encoder.layer] == [16, 16]
    assert model.bert.encoder.layer[0].intermediate.dense.out_features == 64  # the original is untouched

    # a machine where speed is exactly 1 / fraction: 2x lies between the timed fractions 0.65 and 0.5
    def fake(dense, copies, shapes, threads=None):
        return [[round(1 / f, 4) for f in speed.GRID]]

    monkeypatch.setattr(speed, "measure_speedups", fake)
    fraction, timings = speed.keep_fraction_for_speedup(model, 2.0, round_to=1)
    assert fraction == pytest.approx(0.5, abs=0.01) and timings[0.5] == 2.0
    fraction, _ = speed.keep_fraction_for_speedup(model, 2.5, round_to=1)
    assert 0.4 <= fraction <= 0.5
    with pytest.raises(ConfigError, match=r"only 8\.33x faster"):
        speed.keep_fraction_for_speedup(model, 20, round_to=1)


def test_compress_with_a_speedup_target_measures_it_at_the_end(tiny_bert, sentiment_dir, tmp_path):
    out = tmp_path / "fast"
    assert cli(f"compress --model {tiny_bert} --data {sentiment_dir} --out {out} {TRAIN} --speedup 1.05") == 0
    plan = _summary(out)["speedup"]
    assert plan["target"] == 1.05 and 0 < plan["keep_fraction"] < 1
    assert plan["measured"] == _summary(out)["stages"][-1]["extra"]["speedup"]["32x128"]
    assert plan["met"] == (plan["measured"] >= 1.05)


def test_study_ordering_compares_the_orders_at_equal_steps(tiny_bert, sentiment_dir, tmp_path):
    out = tmp_path / "study"
    code = cli(f"study ordering --model {tiny_bert} --data {sentiment_dir} --out {out} {TRAIN} --heads 0.5 --seeds 1 2")
    assert code == 0
    summary = _summary(out)
    assert [row["order"] for row in summary["orders"]] == ["joint", "lora-prune", "prune-lora"]
    for row in summary["orders"]:
        assert set(row["per_seed"]) == {"1", "2"} and row["std"] >= 0
        assert row["mean"] == pytest.approx(sum(row["per_seed"].values()) / 2, abs=1e-4)
    assert {run["total_steps"] for run in summary["runs"]} == {24} and summary["total_steps"] == 24
    assert set(summary["control"]["per_seed"]) == {"1", "2"}
    assert (out / "ordering.png").stat().st_size > 0 and "| joint |" in (out / "study.md").read_text()
    for seed in (1, 2):  # the shared teacher stage was trained once and reused
        weights = [out / f"seed-{seed}" / order / "teacher" / "model.safetensors" for order in ("joint", "lora-prune")]
        assert weights[0].read_bytes() == weights[1].read_bytes()
    assert tree_digest(out / "seed-1" / "joint" / "final") != tree_digest(out / "seed-2" / "joint" / "final")


def test_a_resumed_speedup_run_keeps_the_keep_fraction_it_measured(tiny_bert, sentiment_dir, tmp_path, monkeypatch):
    """Timings differ from run to run: the resumed run must prune to the fraction measured first."""
    fractions = iter([0.5, 0.75])

    def measured(model, speedup, shape, round_to, threads):
        return next(fractions), {0.5: 2.0}

    monkeypatch.setattr(speed, "keep_fraction_for_speedup", measured)
    out = tmp_path / "fast"
    command = f"compress --model {tiny_bert} --data {sentiment_dir} --out {out} {TRAIN} --speedup 2"
    resume_training = interrupt_in_stage(monkeypatch)
    assert cli(command) == 130
    resume_training()
    assert cli(f"{command} --resume") == 0
    summary = _summary(out)
    assert summary["speedup"]["keep_fraction"] == 0.5 and summary["target"]["ffn"] == 0.5


def test_compress_can_prune_while_training_every_weight(tiny_bert, sentiment_dir, tmp_path):
    out = tmp_path / "full"
    flags = "--ffn 0.5 --prune-with full"
    assert cli(f"compress --model {tiny_bert} --data {sentiment_dir} --out {out} {TRAIN} {flags}") == 0
    stages = {row["stage"]: row for row in _summary(out)["stages"]}
    assert stages["pruned"]["kind"] == "full" and "lora" not in stages["pruned"]["extra"]
    trainable = [stages[name]["extra"]["train"]["trainable_params"] for name in ("teacher", "pruned")]
    assert trainable[0] < trainable[1]
    assert sum(layer["ffn"] for layer in stages["final"]["extra"]["structure"]) == 64


def _zeros(folder) -> dict[str, torch.Tensor]:
    """Where the layers' projection weights of a saved stage are zero."""
    from prunekit.adapters import get_adapter

    model = load_model(str(folder))[0]
    return {name: linear.weight == 0 for name, linear in get_adapter(model).prunable_linears().items()}


def test_study_ordering_with_an_unstructured_target_keeps_every_zero(tiny_bert, sentiment_dir, tmp_path):
    """--sparsity: every order ends with the target's share of zeros, and no later stage (LoRA merges
    included) brings a pruned weight back."""
    out = tmp_path / "study"
    train = TRAIN.replace(" --round-to 1", "")  # no heads or neurons to round: --round-to would be an error
    flags = f"--model {tiny_bert} --data {sentiment_dir} --out {out} {train} --sparsity 0.6 --seeds 1"
    assert cli(f"study ordering {flags}") == 0
    summary = _summary(out)
    for order in ("joint", "lora-prune", "prune-lora"):
        folder = out / "seed-1" / order
        final, pruned = _zeros(folder / "final"), _zeros(folder / "pruned")
        total = sum(mask.numel() for mask in final.values())
        assert sum(int(mask.sum()) for mask in final.values()) / total == pytest.approx(0.6, abs=1e-3), order
        assert all(bool((pruned[name] <= final[name]).all()) for name in final), order  # zeros kept
    joint_pruned = _summary(out / "seed-1" / "joint" / "pruned")["row"]
    assert joint_pruned["kind"] == "full" and joint_pruned["extra"]["sparsity"] == pytest.approx(0.6, abs=1e-3)
    assert _summary(out / "seed-1" / "prune-lora" / "lora")["row"]["kind"] == "lora"
    assert all(row["compression"] > 1 for row in summary["orders"])
    assert summary["target"]["sparsity"] == 0.6 and (out / "ordering.png").stat().st_size > 0


def test_unstructured_and_structured_targets_do_not_mix(tiny_bert, sentiment_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli(f"compress --model {tiny_bert} --data {sentiment_dir} --out {out} --sparsity 0.5 --ffn 0.5") == 2
    assert "pass one kind" in capsys.readouterr().err and not out.exists()


def test_the_ordering_study_reconstructs_in_the_one_shot_step_of_an_order(tiny_bert, sentiment_dir, tmp_path,
                                                                         capsys):  # fmt: skip
    out = tmp_path / "study"
    flags = f"--model {tiny_bert} --data {sentiment_dir} {TRAIN} --heads 0.5 --ffn 0.5 --reconstruct"
    assert cli(f"study ordering {flags} --orders lora-prune --seeds 1 --out {out}") == 0
    reconstruction = _summary(out / "seed-1" / "lora-prune" / "pruned")["reconstruction"]
    assert reconstruction["error_after"] < reconstruction["error_before"]
    assert cli(f"compress {flags} --out {tmp_path / 'joint'}") == 2  # compress runs the joint order: no effect
    assert "--reconstruct" in capsys.readouterr().err
