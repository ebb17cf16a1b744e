"""Each architecture family's adapter finds the same structure the config describes."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForSequenceClassification, GPT2Config

from prunekit.adapters import get_adapter, supported_model_types
from prunekit.errors import UnsupportedModelError
from tests.tiny import FAMILIES, tiny_config

EXPECTED = {  # layers, heads, kv heads, head dim, ffn width, gated, classifier linears
    "bert": (2, 4, 4, 8, 64, False, 2),
    "roberta": (2, 4, 4, 8, 64, False, 2),
    "distilbert": (2, 4, 4, 8, 64, False, 2),
    "llama": (2, 8, 2, 8, 96, True, 1),
    "mistral": (2, 8, 2, 8, 96, True, 1),
    "qwen2": (2, 8, 2, 8, 96, True, 1),
}


@pytest.fixture(params=FAMILIES)
def family_model(request):
    torch.manual_seed(0)
    return request.param, AutoModelForSequenceClassification.from_config(tiny_config(request.param))


def test_adapter_reads_structure_per_layer(family_model):
    """Heads, KV groups, head size and FFN width come from the live modules, per layer."""
    family, model = family_model
    layers, heads, kv_heads, head_dim, ffn, gated, head_linears = EXPECTED[family]
    adapter = get_adapter(model)
    assert adapter.describe() == [{"heads": heads, "kv_heads": kv_heads, "head_dim": head_dim, "ffn": ffn}] * layers
    for layer in adapter.layers():
        assert (layer.ffn.gate is not None) == gated
        assert layer.attention.heads_per_kv_group == heads // kv_heads
    assert len(adapter.classifier()) == head_linears
    assert adapter.word_embeddings() is model.get_input_embeddings()


def test_prunable_linears_are_the_layer_projections_only(family_model):
    """Targets are q/k/v/o + FFN of every layer: never embeddings or the classifier."""
    family, model = family_model
    adapter = get_adapter(model)
    linears = adapter.prunable_linears()
    per_layer = 4 + (3 if EXPECTED[family][5] else 2)
    assert len(linears) == per_layer * EXPECTED[family][0]
    classifier_ids = {id(m) for m in adapter.classifier()}
    assert not classifier_ids & {id(m) for m in linears.values()}
    named = dict(model.named_modules())
    assert all(named[name] is module for name, module in linears.items())


def test_head_count_follows_pruned_shapes(family_model):
    """After q/k/v lose a head's rows, the adapter reports one head fewer (per-layer widths may differ)."""
    family, model = family_model
    adapter = get_adapter(model)
    attention = adapter.layers()[0].attention
    group = attention.heads_per_kv_group
    keep = attention.query.out_features - attention.head_dim * group
    attention.query.weight.data = attention.query.weight.data[:keep]
    attention.query.out_features = keep
    assert adapter.layers()[0].attention.num_heads == EXPECTED[family][1] - group
    assert adapter.layers()[1].attention.num_heads == EXPECTED[family][1]


def test_kv_head_arithmetic(family_model):
    """The one place grouped-query arithmetic lives: K/V heads kept, KV groups of kept heads, saved layouts."""
    family, model = family_model
    _, heads, kv_heads, *_ = EXPECTED[family]
    attention = get_adapter(model).layers()[0].attention
    assert attention.grouped == (kv_heads < heads)
    assert attention.head_groups == (kv_heads if kv_heads < heads else 1)
    assert attention.kv_heads_kept(0) == 0
    assert attention.kv_heads_kept(heads // 2) == (kv_heads if kv_heads < heads else heads // 2)
    group = heads // kv_heads
    one_per_group = [g * group for g in range(kv_heads)]
    assert attention.kv_groups_of(one_per_group) == (list(range(kv_heads)), 1)
    layout = attention.head_layout(len(one_per_group), kv_heads)
    assert attention.kv_groups_of(layout) == (list(range(kv_heads)), 1)
    if attention.grouped:
        assert layout == one_per_group
        with pytest.raises(ValueError, match="spread evenly"):
            attention.kv_groups_of([0, 1, group])  # two heads of group 0, one of group 1
    else:
        assert layout == list(range(kv_heads))


def test_unsupported_architecture_lists_supported_ones():
    model = AutoModelForSequenceClassification.from_config(
        GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=50, pad_token_id=0)
    )
    with pytest.raises(UnsupportedModelError, match="'gpt2' is not supported") as info:
        get_adapter(model)
    for model_type in supported_model_types():
        assert model_type in str(info.value)
