"""Adaptive structured pruning during fine-tuning: scores from gate gradients, a cubic schedule to the
target, allocation across layers from the scores, and physical removal that keeps the trained function."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from prunekit.data import load_task_data
from prunekit.methods.adaptive import AdaptiveConfig, AdaptivePruningCallback, remove_pruned_units
from prunekit.models import load_model
from prunekit.training import FinetuneConfig, finetune
from tests.conftest import cli
from tests.tiny import save_tiny_model, tiny_model, tiny_tokenizer

TRAIN = "--lr 5e-3 --epochs 6 --batch-size 16 --max-length 16 --prune-every 2"


def _logits(model) -> torch.Tensor:
    batch = tiny_tokenizer()(
        ["a great film", "an awful film", "the film is not good"], padding=True, return_tensors="pt"
    )
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


def _train(model, tokenizer, data, config: AdaptiveConfig, tmp_path, lr: float = 5e-3) -> AdaptivePruningCallback:
    callback = AdaptivePruningCallback(config)
    finetune(
        model,
        tokenizer,
        data.train,
        data.task,
        FinetuneConfig(epochs=4, batch_size=16, lr=lr, max_length=16),
        tmp_path,
        callbacks=[callback],
    )
    return callback


def test_cli_adaptive_hits_the_targets_and_saves_the_pruned_model(tiny_bert, sentiment_dir, tmp_path):
    out = tmp_path / "adaptive"
    code = cli(
        f"finetune --model {tiny_bert} --data {sentiment_dir} --out {out} {TRAIN} "
        "--prune adaptive --heads 0.5 --ffn 0.5 --round-to 1"
    )
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    structure = summary["structure"]
    assert sum(layer["heads"] for layer in structure) == 4 and sum(layer["ffn"] for layer in structure) == 64
    history = summary["adaptive"]["history"]
    assert history[-1]["step"] == summary["adaptive"]["schedule"]["end"] == 24  # 2/3 of 36 steps
    assert [h["ffn"] for h in history] == sorted((h["ffn"] for h in history), reverse=True)  # only ever shrinks
    assert summary["params_total"] < summary["params_before"]
    model = AutoModelForSequenceClassification.from_pretrained(out)  # prunekit registered its classes
    assert [layer.intermediate.dense.out_features for layer in model.bert.encoder.layer] == [
        s["ffn"] for s in structure
    ]
    result = tmp_path / "e.json"
    assert cli(f"evaluate --model {out} --data {sentiment_dir} --max-length 16 --json {result}") == 0
    assert json.loads(result.read_text())["metrics"] == pytest.approx(summary["metrics"])


def test_allocation_follows_the_scores_not_a_uniform_split(tiny_bert, sentiment_dir, tmp_path):
    """Layer 1's FFN contributes (almost) nothing, so its neurons score ~0: ranked globally, the kept
    neurons go to layer 0; with the uniform scope both layers keep half."""
    data = load_task_data(str(sentiment_dir))
    widths = {}
    for scope in ("global", "uniform"):
        model, tokenizer = load_model(str(tiny_bert), data.task)
        with torch.no_grad():
            model.bert.encoder.layer[1].output.dense.weight.zero_()
        callback = _train(
            model, tokenizer, data, AdaptiveConfig(ffn=0.5, scope=scope, round_to=1, every=2), tmp_path, lr=1e-8
        )
        widths[scope] = [layer["ffn"] for layer in remove_pruned_units(model, callback)]
    assert widths["uniform"] == [32, 32]
    assert widths["global"] == [63, 1]  # layer 1 keeps only its guaranteed minimum; 64 in all


def test_gated_network_equals_the_physically_pruned_one(tiny_bert, sentiment_dir, tmp_path):
    data = load_task_data(str(sentiment_dir))
    model, tokenizer = load_model(str(tiny_bert), data.task)
    callback = _train(model, tokenizer, data, AdaptiveConfig(heads=0.5, ffn=0.5, round_to=8, every=2), tmp_path)
    gated = _logits(model)
    structure = remove_pruned_units(model, callback)
    assert all(layer["ffn"] % 8 == 0 for layer in structure)
    torch.testing.assert_close(_logits(model), gated, atol=1e-5, rtol=1e-5)


def test_lora_with_adaptive_pruning_merges_then_cuts(tiny_bert, sentiment_dir, tmp_path):
    out = tmp_path / "lora-adaptive"
    code = cli(
        f"finetune --model {tiny_bert} --data {sentiment_dir} --out {out} {TRAIN} --lora --lora-r 4 "
        "--prune adaptive --heads 0.5 --ffn 0.5 --round-to 1"
    )
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["lora"]["metrics_before_merge"] == pytest.approx(summary["metrics"])  # gated LoRA == cut model
    assert sum(layer["ffn"] for layer in summary["structure"]) == 64


def test_gqa_heads_stay_spread_over_kv_groups(tmp_path, sentiment_dir):
    folder = save_tiny_model("llama", tmp_path / "llama")  # 8 query heads in 2 KV groups per layer
    out = tmp_path / "adaptive"
    code = cli(
        f"finetune --model {folder} --data {sentiment_dir} --out {out} {TRAIN} "
        "--prune adaptive --heads 0.5 --round-to 1"
    )
    assert code == 0
    structure = json.loads((out / "summary.json").read_text())["structure"]
    assert sum(layer["heads"] for layer in structure) == 8
    assert all(layer["heads"] % layer["kv_heads"] == 0 for layer in structure if layer["heads"])
    model, _ = load_model(str(out))
    assert _logits(model).shape == (3, 2)


@pytest.mark.parametrize("lora", ["", "--lora"])
def test_params_budget_is_met(lora, tiny_bert, sentiment_dir, tmp_path):
    out = tmp_path / "budget"
    code = cli(
        f"finetune --model {tiny_bert} --data {sentiment_dir} --out {out} {TRAIN} {lora} "
        "--prune adaptive --params-budget 20000 --round-to 1"
    )
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert 18000 <= summary["params_total"] <= 20000


def test_flops_budget_is_met_at_the_end_of_the_schedule(tiny_bert, sentiment_dir, tmp_path):
    from prunekit.adapters import get_adapter
    from prunekit.methods.structured import flops_after
    from prunekit.models import load_model

    out = tmp_path / "flops"
    flags = "--prune adaptive --flops-budget 0.4 --round-to 1"  # FLOPs at TRAIN's --max-length 16
    assert cli(f"finetune --model {tiny_bert} --data {sentiment_dir} --out {out} {TRAIN} {flags}") == 0

    def layer_flops(folder) -> int:
        adapter = get_adapter(load_model(str(folder))[0])
        layers = adapter.layers()
        return flops_after(adapter, [a.attention.num_heads for a in layers], [a.ffn.num_neurons for a in layers], 16)

    assert 0.3 * layer_flops(tiny_bert) < layer_flops(out) <= 0.4 * layer_flops(tiny_bert)


def test_lora_factor_gradients_estimate_the_frozen_weight_gradient():
    """LoRAPrune's estimate: with ∂L/∂B = s·G·Aᵀ and ∂L/∂A = s·Bᵀ·G (G the true weight gradient),
    ĝ = s·(∂L/∂B·A + B·∂L/∂A) = s²·(G·AᵀA + B·Bᵀ·G); the score is |(W + s·B·A) ⊙ ĝ|."""
    from peft import get_peft_model

    from prunekit.methods.adaptive import lora_weight_importance
    from prunekit.training.lora import lora_config

    torch.manual_seed(0)
    model = tiny_model("bert")
    config = lora_config(model, rank=4, dropout=0.0)
    peft_model = get_peft_model(model, config)
    query = peft_model.get_base_model().bert.encoder.layer[0].attention.self.query
    torch.nn.init.normal_(query.lora_B["default"].weight, std=0.3)
    query.base_layer.weight.requires_grad_(True)  # to read the true gradient G beside the LoRA ones
    batch = tiny_tokenizer()(["a great film", "an awful film"], padding=True, return_tensors="pt")
    peft_model(**batch, labels=torch.tensor([1, 0])).loss.backward()
    a, b, s = query.lora_A["default"].weight, query.lora_B["default"].weight, query.scaling["default"]
    g = query.base_layer.weight.grad
    expected = ((query.base_layer.weight + s * b @ a) * (s * s * (g @ a.T @ a + b @ b.T @ g))).abs()
    torch.testing.assert_close(lora_weight_importance(query), expected.detach(), atol=1e-7, rtol=1e-4)


def test_adaptive_pruning_with_loraprune_scores(tiny_bert, sentiment_dir, tmp_path, capsys):
    out = tmp_path / "loraprune"
    flags = f"--model {tiny_bert} --data {sentiment_dir} {TRAIN} --prune adaptive --heads 0.5 --ffn 0.5 --round-to 1"
    assert cli(f"finetune {flags} --out {out} --lora --lora-r 4 --adaptive-score lora") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["adaptive"]["score"] == "lora"
    assert sum(layer["heads"] for layer in summary["structure"]) == 4
    assert sum(layer["ffn"] for layer in summary["structure"]) == 64
    assert summary["lora"]["metrics_before_merge"] == pytest.approx(summary["metrics"])
    assert cli(f"finetune {flags} --out {tmp_path / 'full'} --adaptive-score lora") == 2
    assert "train with --lora" in capsys.readouterr().err
