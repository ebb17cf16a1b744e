"""Distillation: the loss terms, layer maps, student initialisation, a frozen teacher, CLI paths."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from prunekit.adapters import get_adapter
from prunekit.cli import main
from prunekit.data import load_task_data
from prunekit.errors import ConfigError
from prunekit.training import FinetuneConfig
from prunekit.training.distill import (
    PROJECTIONS,
    DistillConfig,
    distill,
    kd_loss,
    resolve_layer_map,
    student_from_teacher,
)
from tests.conftest import cli
from tests.tiny import tiny_config, tiny_model, tiny_tokenizer


def tiny_teacher(layers: int = 4, hidden: int = 32, seed: int = 1):
    config = tiny_config("bert")
    config.num_hidden_layers, config.hidden_size = layers, hidden
    torch.manual_seed(seed)
    return AutoModelForSequenceClassification.from_config(config)


# ---------------------------------------------------------------- loss terms


def test_kd_loss_is_zero_for_identical_logits_and_matches_hand_computation():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 0.3, -2.0]])
    assert float(kd_loss(logits, logits, 2.0)) == pytest.approx(0.0, abs=1e-7)
    student = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    for temperature in (1.0, 2.0, 4.0):
        expected = 0.0
        for s_row, t_row in zip(student.tolist(), logits.tolist()):
            s_exp = [math.exp(v / temperature) for v in s_row]
            t_exp = [math.exp(v / temperature) for v in t_row]
            p = [v / sum(t_exp) for v in t_exp]
            q = [v / sum(s_exp) for v in s_exp]
            expected += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
        expected = expected / len(student) * temperature**2  # batch mean, scaled by T²
        assert float(kd_loss(student, logits, temperature)) == pytest.approx(expected, rel=1e-5)


def test_layer_map_auto_and_validation():
    assert resolve_layer_map("auto", 3, 6) == [(0, 1), (1, 3), (2, 5)]
    assert resolve_layer_map("auto", 2, 2) == [(0, 0), (1, 1)]
    assert resolve_layer_map("0:0, 1:5", 2, 6) == [(0, 0), (1, 5)]
    with pytest.raises(ConfigError, match="out of range"):
        resolve_layer_map("0:6", 3, 6)
    with pytest.raises(ConfigError, match="pairs"):
        resolve_layer_map("0-1", 3, 6)


def test_student_copies_exactly_every_other_layer():
    teacher = tiny_teacher(layers=4)
    student, kept = student_from_teacher(teacher, 2)
    assert kept == [0, 2]
    teacher_layers = get_adapter(teacher).layer_list()
    for student_layer, index in zip(get_adapter(student).layer_list(), kept):
        for (name, a), (_, b) in zip(student_layer.state_dict().items(), teacher_layers[index].state_dict().items()):
            assert torch.equal(a, b), name
    assert torch.equal(student.bert.embeddings.word_embeddings.weight, teacher.bert.embeddings.word_embeddings.weight)
    assert torch.equal(student.classifier.weight, teacher.classifier.weight)
    assert student.config.num_hidden_layers == 2
    with pytest.raises(ConfigError, match="--student-layers 5"):
        student_from_teacher(teacher, 5)


# ---------------------------------------------------------------- training


@pytest.fixture
def sentiment(sentiment_dir):
    return load_task_data(str(sentiment_dir))


def run_distill(student, teacher, data, tmp_path, **config):
    training = FinetuneConfig(max_steps=4, batch_size=8, lr=1e-3, max_length=16, logging_steps=1)
    return distill(
        student, teacher, tiny_tokenizer(), data.train, data.task, training, DistillConfig(**config), tmp_path
    )


def test_teacher_gets_no_gradient_and_stays_unchanged(sentiment, tmp_path):
    teacher, student = tiny_teacher(), tiny_model("bert")
    before = {n: p.detach().clone() for n, p in teacher.named_parameters()}
    student_before = student.classifier.weight.detach().clone()
    run_distill(student, teacher, sentiment, tmp_path, alpha_hidden=1.0, alpha_attn=1.0)
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(p, before[n]) for n, p in teacher.named_parameters())
    assert not torch.equal(student.classifier.weight, student_before)
    assert all(p.requires_grad for p in teacher.parameters())  # frozen only while distilling


def test_hidden_distillation_across_widths_uses_a_learned_projection(sentiment, tmp_path):
    teacher, student = tiny_teacher(hidden=64), tiny_model("bert")  # widths 64 vs 32
    seen = {}
    original = student.add_module

    def spy(name, module):
        if name == PROJECTIONS:
            seen["projections"] = module
            seen["start"] = [p.detach().clone() for p in module.parameters()]
        return original(name, module)

    student.add_module = spy
    trainer = run_distill(student, teacher, sentiment, tmp_path, alpha_hidden=1.0, hidden_loss="cosine")
    projections = seen["projections"]
    assert [tuple(p.weight.shape) for p in projections] == [(64, 32), (64, 32)]
    assert any(not torch.equal(a, b) for a, b in zip(projections.parameters(), seen["start"]))  # it learned
    assert not hasattr(student, PROJECTIONS)  # removed before saving
    assert all(math.isfinite(entry["loss"]) for entry in trainer.state.log_history if "loss" in entry)


def test_cached_teacher_logits_mean_no_teacher_forward_while_training(sentiment, tmp_path):
    teacher, student = tiny_teacher(), tiny_model("bert")
    calls = []
    teacher.register_forward_hook(lambda *args: calls.append(1))
    run_distill(student, teacher, sentiment, tmp_path, cache_teacher=True)
    assert len(calls) == math.ceil(len(sentiment.train) / 64)  # the caching pass only
    calls.clear()
    run_distill(tiny_model("bert"), teacher, sentiment, tmp_path, cache_teacher=False)
    assert len(calls) == 4  # one per training step


# ---------------------------------------------------------------- command line


def test_cli_distill_pruned_student_and_layer_student(tiny_bert, sentiment_dir, tmp_path):
    pruned = tmp_path / "pruned"
    assert cli(f"prune structured --model {tiny_bert} --heads 0.5 --ffn 0.5 --importance magnitude --out {pruned}") == 0
    out = tmp_path / "distilled"
    code = cli(
        f"distill --teacher {tiny_bert} --student {pruned} --data {sentiment_dir} --max-length 16 --epochs 1 "
        f"--batch-size 16 --alpha-hidden 0.5 --out {out}"
    )
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kind"] == "distill" and "accuracy" in summary["teacher_metrics"]
    assert summary["distill"]["layer_pairs"] == [[0, 0], [1, 1]]
    assert cli(f"evaluate --model {out} --data {sentiment_dir} --max-length 16") == 0  # reloads pruned shapes
    layered = tmp_path / "one-layer"
    code = cli(
        f"distill --teacher {tiny_bert} --student-layers 1 --data {sentiment_dir} --max-length 16 "
        f"--epochs 1 --out {layered}"
    )
    assert code == 0
    assert json.loads((layered / "config.json").read_text())["num_hidden_layers"] == 1


def test_cli_distill_regression(tmp_path):
    rng = random.Random(0)
    folder = tmp_path / "scores"
    folder.mkdir()
    for name, count in (("train", 48), ("dev", 16)):
        rows = [(f"the film was {'very ' * k}good", k / 2 + rng.random() / 10) for k in rng.choices(range(4), k=count)]
        (folder / f"{name}.csv").write_text("text,score\n" + "".join(f"{t},{y:.3f}\n" for t, y in rows))
    teacher = tmp_path / "teacher"
    data = f"--data {folder} --text-columns text --label-column score --max-length 16"
    assert cli(f"finetune --model {_saved_tiny(tmp_path)} {data} --epochs 2 --out {teacher}") == 0
    out = tmp_path / "student"
    assert cli(f"distill --teacher {teacher} --student-layers 1 {data} --epochs 1 --cache-teacher --out {out}") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["main_metric"] == "pearson" and math.isfinite(summary["metrics"]["mse"])


def _saved_tiny(tmp_path):
    from tests.tiny import save_tiny_model

    return save_tiny_model("bert", tmp_path / "tiny", num_labels=1)


def test_cli_bad_layer_map_exits_2(tiny_bert, sentiment_dir, tmp_path, capsys):
    code = main(
        f"distill --teacher {tiny_bert} --student-layers 1 --data {sentiment_dir} --alpha-hidden 1 "
        f"--layer-map 0:7 --out {tmp_path}/x".split()
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--layer-map 0:7: out of range" in err and len(err.splitlines()) == 1


def test_cli_finetune_with_gradual_pruning_and_distillation(tiny_bert, sentiment_dir, tmp_path):
    out = tmp_path / "sparse-kd"
    code = cli(
        f"finetune --model {tiny_bert} --data {sentiment_dir} --max-length 16 --epochs 2 --batch-size 16 "
        f"--prune magnitude --sparsity 0.6 --prune-every 2 --distill-from {tiny_bert} --alpha-kd 0.7 --out {out}"
    )
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train"]["distill_from"] == str(tiny_bert)
    assert summary["sparsity"] == pytest.approx(0.6, abs=1e-3)


def test_finetune_distils_hidden_states_layer_by_layer(tiny_bert, sentiment_dir, tmp_path):
    """``finetune --distill-from --alpha-hidden``: each student layer also learns its teacher layer's hidden
    states (one to one at equal depth); the loss term changes the trained weights and the summary says so."""
    from safetensors.torch import load_file

    flags = f"--model {tiny_bert} --data {sentiment_dir} --max-length 16 --max-steps 6 --batch-size 8 --lr 1e-3"
    teacher = tmp_path / "teacher"
    assert cli(f"finetune {flags} --seed 3 --out {teacher}") == 0  # a teacher unlike the student's start
    soft, layerwise = tmp_path / "soft", tmp_path / "layerwise"
    assert cli(f"finetune {flags} --distill-from {teacher} --out {soft}") == 0
    layer_flags = "--alpha-hidden 5 --hidden-loss cosine"
    assert cli(f"finetune {flags} --distill-from {teacher} {layer_flags} --out {layerwise}") == 0
    record = json.loads((layerwise / "summary.json").read_text())["train"]["distill"]
    assert record["alpha_hidden"] == 5 and record["hidden_loss"] == "cosine"
    assert record["layer_pairs"] == [[0, 0], [1, 1]]
    assert json.loads((soft / "summary.json").read_text())["train"]["distill"]["alpha_hidden"] == 0
    a, b = load_file(soft / "model.safetensors"), load_file(layerwise / "model.safetensors")
    assert any(not torch.equal(a[name], b[name]) for name in a)
