"""OWL layer-wise sparsity: the allocation's arithmetic, the dense pass it is scored on, and the CLI."""

from __future__ import annotations

import json
import statistics

import pytest
import torch

from prunekit.adapters import get_adapter
from prunekit.errors import ConfigError
from prunekit.importance.weights import input_channel_norms, wanda_scores
from prunekit.methods.magnitude import MagnitudeConfig, prune_magnitude, resolve_targets
from prunekit.models import load_model
from prunekit.pruning.owl import outlier_ratio, owl_sparsities
from prunekit.pruning.select import select_rows
from tests.conftest import cli
from tests.test_llm import _calibration
from tests.tiny import save_tiny_causal_lm


def test_sparsities_average_to_the_target_and_span_twice_the_spread():
    ratios = [0.010, 0.030, 0.002, 0.020, 0.011]
    sparsities = owl_sparsities(ratios, 0.6, 0.08)
    assert statistics.mean(sparsities) == pytest.approx(0.6)
    assert max(sparsities) - min(sparsities) == pytest.approx(0.16)
    order = sorted(range(5), key=ratios.__getitem__)
    assert sorted(range(5), key=sparsities.__getitem__) == order[::-1]  # more outliers, less pruning
    assert owl_sparsities([0.01] * 3, 0.6, 0.08) == [0.6] * 3
    with pytest.raises(ConfigError, match="--owl-spread"):
        owl_sparsities([0.0, 1.0], 0.05, 0.08)


def test_outlier_ratio_counts_scores_above_threshold_times_the_mean():
    scores = [torch.tensor([1.0, 1.0, 1.0, 9.0]), torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 3.0])]
    # mean 2.0: above 2 x mean = 4.0 only the 9; above 1.4 x mean = 2.8 the 9 and the 3
    assert outlier_ratio(scores, 2.0) == pytest.approx(0.1)
    assert outlier_ratio(scores, 1.4) == pytest.approx(0.2)


def _llama_with_outliers(folder):
    """The tiny Llama with a few huge weights in layer 1: OWL must prune that layer least."""
    model, tokenizer = load_model(str(folder))
    with torch.no_grad():
        for module in get_adapter(model).layer_list()[1].modules():
            if isinstance(module, torch.nn.Linear):
                module.weight[:, :2] *= 40
    return model, tokenizer


@pytest.mark.parametrize("importance", ["wanda", "sparsegpt"])
def test_owl_masks_average_to_the_target_and_spare_the_outlier_layer(tiny_llama_lm, importance):
    model, tokenizer = _llama_with_outliers(tiny_llama_lm)
    prefixes = [f"model.layers.{i}." for i in range(len(get_adapter(model).layer_list()))]
    config = MagnitudeConfig(sparsity=0.5, importance=importance, layer_sparsity="owl", owl_spread=0.1)
    per_layer = prune_magnitude(model, config, _calibration(tokenizer)).sparsity_per_prefix(prefixes)
    assert statistics.mean(per_layer) == pytest.approx(0.5, abs=0.005)
    assert max(per_layer) - min(per_layer) == pytest.approx(0.2, abs=0.01)
    assert min(per_layer) == per_layer[1]

    model, tokenizer = _llama_with_outliers(tiny_llama_lm)
    uniform = prune_magnitude(model, MagnitudeConfig(sparsity=0.5, importance=importance), _calibration(tokenizer))
    assert uniform.sparsity_per_prefix(prefixes) == pytest.approx([0.5] * len(prefixes), abs=0.005)


def test_owl_scores_the_dense_model_and_then_prunes_each_layer_at_its_own_sparsity(tmp_path):
    """OWL's ratios come from the dense model (a whole-model pass gives the same), and each layer is then
    pruned, on what the already-pruned layers before it produce, at exactly its allocated sparsity."""
    folder = save_tiny_causal_lm("llama", tmp_path / "lm", seed=3)
    model, tokenizer = load_model(str(folder))
    batches = _calibration(tokenizer)
    config = MagnitudeConfig(sparsity=0.5, importance="wanda", scope="row", layer_sparsity="owl", owl_threshold=3)
    masks = prune_magnitude(model, config, batches)

    reference, _ = load_model(str(folder))
    layers = range(len(get_adapter(reference).layer_list()))
    targets = resolve_targets(reference)
    by_layer = [{n: m for n, m in targets.items() if f".{i}." in n} for i in layers]
    norms = input_channel_norms(reference, {n.removesuffix(".weight"): m for n, m in targets.items()}, batches)
    scores = {n: wanda_scores({n: m.weight}, {n: norms[n.removesuffix(".weight")]})[n]() for n, m in targets.items()}
    ratios = [outlier_ratio([scores[n] for n in group], 3) for group in by_layer]
    sparsities = owl_sparsities(ratios, 0.5, 0.08)
    assert len(set(sparsities)) > 1
    for index, group in zip(layers, by_layer):
        norms = input_channel_norms(reference, {n.removesuffix(".weight"): m for n, m in group.items()}, batches)
        for name, module in group.items():
            layer_scores = wanda_scores({name: module.weight}, {name: norms[name.removesuffix(".weight")]})[name]()
            assert torch.equal(select_rows(layer_scores, sparsities[index]), masks.masks[name]), name
        for name in group:
            dict(reference.named_parameters())[name].data.mul_(masks.masks[name])


def test_cli_records_the_layer_sparsities_and_refuses_owl_where_it_means_nothing(
    tiny_llama_lm, text_dir, tmp_path, capsys
):
    out = tmp_path / "owl"
    flags = f"--model {tiny_llama_lm} --data {text_dir} --calibration-samples 6 --calibration-length 24"
    assert cli(f"prune magnitude {flags} --importance wanda --sparsity 0.6 --layer-sparsity owl --out {out}") == 0
    owl = json.loads((out / "summary.json").read_text())["owl"]
    assert owl["threshold"] == 5.0 and owl["spread"] == 0.08
    assert statistics.mean(owl["layer_sparsities"]) == pytest.approx(0.6, abs=0.005)
    for wrong, said in [
        ("--importance magnitude --layer-sparsity owl", "--layer-sparsity owl"),
        ("--importance wanda --pattern 2:4 --layer-sparsity owl", "--layer-sparsity owl"),
        ("--importance wanda --scope global --layer-sparsity owl", "--layer-sparsity owl"),
        ("--importance sparsegpt --owl-spread 0.1", "--owl-spread"),
    ]:
        capsys.readouterr()
        assert cli(f"prune magnitude {flags} {wrong} --out {tmp_path / 'no'}") == 2, wrong
        assert said in capsys.readouterr().err, wrong
        assert not (tmp_path / "no").exists()
