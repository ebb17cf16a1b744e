"""Structured pruning with layer-wise least-squares reconstruction (issue #27 item 1): the refit is the
least-squares optimum, beats plain pruning at reproducing the dense layer, leaves an unpruned layer
exactly as it was, and works end to end from the command line for encoders and decoders."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from prunekit.adapters import get_adapter
from prunekit.errors import ConfigError
from prunekit.methods.reconstruct import input_gram, prune_and_reconstruct, refit
from prunekit.methods.structured import StructuredConfig, prune_structured
from prunekit.models import load_model
from prunekit.pruned_models import load_pruned
from tests.conftest import cli
from tests.test_structured import batch, tiny
from tests.tiny import tiny_model

FAMILIES = ("bert", "llama")


def test_the_refit_is_the_least_squares_solution_with_its_bias():
    torch.manual_seed(0)
    linear = nn.Linear(12, 5).requires_grad_(False)
    inputs = torch.randn(400, 12, dtype=torch.float64)
    gram = torch.cat([inputs, torch.ones(400, 1, dtype=torch.float64)], 1)
    gram = gram.T @ gram
    kept = torch.tensor([0, 2, 3, 7, 8, 11])
    weight, bias, before, after = refit(linear, gram, kept, dampening=0.0)
    target = inputs @ linear.weight.double().T + linear.bias.double()
    design = torch.cat([inputs[:, kept], torch.ones(400, 1, dtype=torch.float64)], 1)
    expected = torch.linalg.lstsq(design, target).solution
    assert torch.allclose(weight.T, expected[:-1], atol=1e-8) and torch.allclose(bias, expected[-1], atol=1e-8)
    plain = inputs[:, kept] @ linear.weight.double()[:, kept].T + linear.bias.double()
    assert before == pytest.approx(float(((plain - target) ** 2).sum() / (target**2).sum()), rel=1e-6)
    assert after < before


def _hidden(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        out = model(**{k: v for k, v in inputs.items() if k != "labels"}, output_hidden_states=True)
    return out.hidden_states[-1]


@pytest.mark.parametrize("family", FAMILIES)
def test_reconstruction_reproduces_the_dense_model_better_than_plain_pruning(family):
    dense = tiny(family)
    calibration = [batch(8, seed) for seed in range(6)]
    held_out = batch(8, seed=99)
    config = dict(importance="magnitude", heads=0.5, ffn=0.5, round_to=1)
    plain, rebuilt = copy.deepcopy(dense), copy.deepcopy(dense)
    prune_structured(plain, StructuredConfig(**config), calibration)
    report = prune_structured(rebuilt, StructuredConfig(**config, reconstruct=True), calibration)
    assert get_adapter(plain).describe() == get_adapter(rebuilt).describe()  # the same units removed
    record = report["reconstruction"]
    assert record["layers"] and all(r["error_after"] < r["error_before"] for r in record["layers"])
    assert record["seconds"] >= 0 and record["peak_rss_mb"] > 0
    reference = _hidden(dense, held_out)
    plain_error = (_hidden(plain, held_out) - reference).pow(2).mean()
    rebuilt_error = (_hidden(rebuilt, held_out) - reference).pow(2).mean()
    assert rebuilt_error < plain_error


@pytest.mark.parametrize("family", FAMILIES)
def test_a_layer_with_nothing_pruned_is_left_exactly_as_it_was(family):
    model = tiny_model(family).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    adapter = get_adapter(model)
    layers = adapter.layers()
    kept_heads = {i: list(range(layer.attention.num_heads)) for i, layer in enumerate(layers)}
    kept_neurons = {i: list(range(layer.ffn.num_neurons)) for i, layer in enumerate(layers)}
    record = prune_and_reconstruct(model, adapter, kept_heads, kept_neurons, [batch(8)])
    assert record["layers"] == []
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_the_gram_leaves_padding_out():
    model = tiny("bert")
    down = get_adapter(model).layers()[0].ffn.down
    full = batch(4)
    padded = {k: v.clone() for k, v in full.items()}
    padded["input_ids"][0, 8:] = 7  # only padded positions change
    assert torch.allclose(input_gram(model, down, [full]), input_gram(model, down, [padded]))


def test_reconstruct_needs_units_and_data():
    with pytest.raises(ConfigError, match="--reconstruct refits the layers on calibration data"):
        prune_structured(tiny("bert"), StructuredConfig(heads=0.5, importance="magnitude", reconstruct=True), [])


@pytest.mark.parametrize("family", FAMILIES)
def test_cli_prune_structured_reconstruct(family, tiny_bert, tiny_llama_lm, sentiment_dir, text_dir, tmp_path):
    folder, data = (tiny_bert, sentiment_dir) if family == "bert" else (tiny_llama_lm, text_dir)
    flags = "--heads 0.5 --ffn 0.5 --importance magnitude --round-to 1 --max-length 16 --calibration-samples 16"
    out = tmp_path / "rebuilt"
    assert cli(f"prune structured --model {folder} --data {data} {flags} --reconstruct --out {out}") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reconstruction"]["error_after"] < summary["reconstruction"]["error_before"]
    model = load_pruned(out) if family == "llama" else load_model(str(out))[0]
    assert sum(p.numel() for p in model.parameters()) == summary["params_total"]
    assert cli(f"prune structured --model {folder} --layers 1 --reconstruct --out {tmp_path / 'x'}") == 2
