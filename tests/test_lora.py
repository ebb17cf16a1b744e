"""LoRA through PEFT in the training commands: merged model + PEFT adapter, `prunekit merge`, and a
sparse base that keeps every zero through LoRA training and merge."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForSequenceClassification

from prunekit.models import load_model
from prunekit.pruning.masks import MaskSet
from prunekit.training.lora import lora_config
from tests.conftest import cli
from tests.tiny import tiny_model, tiny_tokenizer

LORA = "--lora --lora-r 4 --lr 5e-2 --epochs 6 --batch-size 16 --max-length 16"


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_bert, sentiment_dir) -> Path:
    out = tmp_path_factory.mktemp("lora") / "ft"
    assert cli(f"finetune --model {tiny_bert} --data {sentiment_dir} --out {out} {LORA}") == 0
    return out


def _logits(model, texts=("a great film", "an awful film", "the film is not good")) -> torch.Tensor:
    batch = tiny_tokenizer()(list(texts), padding=True, return_tensors="pt")
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


def test_finetune_lora_saves_a_merged_model_and_a_peft_adapter(lora_run, tiny_bert):
    summary = json.loads((lora_run / "summary.json").read_text())
    lora = summary["lora"]
    assert lora["r"] == 4 and lora["alpha"] == 8 and lora["target_modules"] == 12  # 6 projections x 2 layers
    assert lora["trainable_params"] == summary["train"]["trainable_params"] < summary["params_total"] / 2
    assert summary["train"]["peak_rss_mb"] > 0
    assert lora["metrics_before_merge"] == pytest.approx(summary["metrics"])
    assert summary["metrics"]["accuracy"] >= 0.9  # the adapters learnt the easy synthetic task
    merged = AutoModelForSequenceClassification.from_pretrained(lora_run)  # a plain model folder
    assert not any("lora" in name for name in load_file(str(lora_run / "model.safetensors")))
    config = AutoConfig.from_pretrained(lora_run / "adapter")
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert, config=config)
    adapted = PeftModel.from_pretrained(base, str(lora_run / "adapter"))
    torch.testing.assert_close(_logits(adapted), _logits(merged), atol=1e-5, rtol=1e-5)


def test_merge_command_rebuilds_the_merged_model(lora_run, tiny_bert, sentiment_dir, tmp_path):
    out = tmp_path / "merged"
    code = cli(
        f"merge --model {tiny_bert} --adapter {lora_run}/adapter --out {out} --data {sentiment_dir} --max-length 16"
    )
    assert code == 0
    ours, theirs = load_file(str(out / "model.safetensors")), load_file(str(lora_run / "model.safetensors"))
    assert ours.keys() == theirs.keys()
    assert all(torch.allclose(ours[k], theirs[k], atol=1e-6) for k in ours)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kind"] == "merge" and summary["metrics"] == pytest.approx(summary["metrics_before_merge"])


def test_lora_on_a_sparse_model_keeps_every_zero(tiny_bert, sentiment_dir, tmp_path):
    masked, out = tmp_path / "masked", tmp_path / "ft"
    assert cli(f"prune magnitude --model {tiny_bert} --sparsity 0.7 --out {masked}") == 0
    assert cli(f"finetune --model {masked} --data {sentiment_dir} --out {out} {LORA}") == 0
    masks = MaskSet.load(masked)
    weights = load_file(str(out / "model.safetensors"))
    for name, keep in masks.masks.items():
        assert bool((weights[name][~keep] == 0).all())
    before = load_file(str(masked / "model.safetensors"))
    assert any(not torch.equal(weights[n][keep], before[n][keep]) for n, keep in masks.masks.items())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sparsity"] == pytest.approx(0.7, abs=1e-3)
    assert summary["lora"]["metrics_before_merge"] == pytest.approx(summary["metrics"])
    merged = tmp_path / "merged"  # merging the adapter on its own keeps the zeros too
    assert cli(f"merge --model {masked} --adapter {out}/adapter --out {merged}") == 0
    again = load_file(str(merged / "model.safetensors"))
    assert all(torch.allclose(again[k], weights[k], atol=1e-6) for k in weights)


def test_distill_with_lora_trains_a_sparse_student_and_keeps_its_zeros(tiny_bert, sentiment_dir, tmp_path):
    masked, out = tmp_path / "masked", tmp_path / "student"
    assert cli(f"prune magnitude --model {tiny_bert} --sparsity 0.5 --out {masked}") == 0
    code = cli(f"distill --teacher {tiny_bert} --student {masked} --data {sentiment_dir} --out {out} {LORA}")
    assert code == 0
    weights = load_file(str(out / "model.safetensors"))
    assert all(bool((weights[n][~keep] == 0).all()) for n, keep in MaskSet.load(masked).masks.items())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["lora"]["trainable_params"] < summary["params_total"] / 2
    assert summary["lora"]["metrics_before_merge"] == pytest.approx(summary["metrics"])
    assert (out / "adapter" / "adapter_config.json").is_file()


@pytest.mark.parametrize("family, projections", [("bert", 6), ("distilbert", 6), ("llama", 7)])
def test_auto_targets_come_from_the_model_adapter(family, projections):
    config = lora_config(tiny_model(family))
    assert len(config.target_modules) == projections * 2  # per layer, 2 layers


def test_lora_targets_regex_selects_modules(tmp_path):
    model = tiny_model("llama")
    config = lora_config(model, targets=r".*\.(q_proj|v_proj)")
    assert sorted(config.target_modules) == sorted(
        f"model.layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "v_proj")
    )


def test_lora_finetune_of_a_tiny_llama(tmp_path, sentiment_dir):
    from tests.tiny import save_tiny_model

    folder = save_tiny_model("llama", tmp_path / "llama")
    out = tmp_path / "ft"
    assert cli(f"finetune --model {folder} --data {sentiment_dir} --out {out} {LORA}") == 0
    model, _ = load_model(str(out))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["lora"]["target_modules"] == 14
    assert summary["lora"]["metrics_before_merge"] == pytest.approx(summary["metrics"])
    assert type(model).__name__ == "LlamaForSequenceClassification"


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_structured_pruning_of_an_unmerged_lora_model_equals_pruning_the_merged_one(family):
    """Heads and neurons cut from W + s·B·A with the adapters still separate (B's rows / A's columns
    sliced alike) give the same network as merging first and cutting the merged weights."""
    from peft import get_peft_model

    from prunekit.adapters import get_adapter
    from prunekit.pruning.surgery import prune_heads, prune_neurons

    torch.manual_seed(0)
    peft_model = get_peft_model(tiny_model(family), lora_config(tiny_model(family), rank=4))
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:  # B starts at zero: give the adapters something to slice
            torch.nn.init.normal_(param, std=0.2)
    merged = copy.deepcopy(peft_model).merge_and_unload()
    layers = get_adapter(merged).layers()
    per_group = layers[0].attention.heads_per_kv_group
    heads = {0: list(range(per_group)), 1: list(range(per_group, 2 * per_group))}  # whole KV groups
    neurons = {0: [0, 3, 5, 17], 1: list(range(0, layers[1].ffn.num_neurons, 3))}
    for model in (merged, peft_model.get_base_model()):
        prune_heads(get_adapter(model), heads)
        prune_neurons(get_adapter(model), neurons)
    sliced = peft_model.get_base_model()
    query = get_adapter(sliced).layers()[1].attention.query
    kept_rows = per_group * 8  # head_dim is 8 in both tiny models
    assert query.lora_B["default"].out_features == query.base_layer.out_features == kept_rows
    torch.testing.assert_close(_logits(peft_model.merge_and_unload()), _logits(merged), atol=1e-5, rtol=0)


def _lora_layer(masked: bool, dropout: float = 0.0, seed: int = 0):
    """A Linear(16, 12) with LoRA attached as training attaches it (B given a value: it starts at zero)."""
    from peft import LoraConfig

    from prunekit.training.lora import attach_lora

    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(16, 12))
    weight = model[0].weight
    mask = torch.rand(weight.shape) > 0.5 if masked else None
    if masked:
        with torch.no_grad():
            weight.mul_(mask)
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules=["0"])
    peft = attach_lora(model, config, MaskSet({"0.weight": mask}) if masked else None)
    layer = peft.base_model.model[0]
    with torch.no_grad():
        layer.lora_B["default"].weight.normal_()
    return peft, layer, mask


@pytest.mark.parametrize("masked", [False, True])
def test_lora_keeps_only_its_input_for_the_backward_pass(masked):
    """Neither the dropped-out input nor (masked) the full-size M ⊙ s·B·A is held for the backward pass."""
    peft, layer, _ = _lora_layer(masked, dropout=0.1)
    peft.train()
    weight, x = layer.base_layer.weight, torch.randn(5, 16, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = peft(x)
    own = (x.data_ptr(), weight.data_ptr())
    held = [t for t in saved if t.shape in (x.shape, weight.shape) and t.data_ptr() not in own]
    assert not held
    out.sum().backward()
    assert layer.lora_A["default"].weight.grad is not None and x.grad is not None


@pytest.mark.parametrize("masked", [False, True])
def test_recomputed_lora_gets_the_gradients_of_w_plus_the_masked_update(masked):
    peft, layer, mask = _lora_layer(masked)
    weight, x = layer.base_layer.weight, torch.randn(5, 16)
    out = peft(x)
    out.square().sum().backward()
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    a_ref, b_ref = a.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
    update = (b_ref @ a_ref) * layer.scaling["default"]
    reference = x @ (weight.detach() + (mask * update if masked else update)).T + layer.base_layer.bias
    reference.square().sum().backward()
    assert torch.allclose(out, reference, atol=1e-5)
    assert torch.allclose(a.grad, a_ref.grad, atol=1e-4) and torch.allclose(b.grad, b_ref.grad, atol=1e-4)
