"""Structured pruning: physical removal == masking, reload in both formats, vocabulary, targets, CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from prunekit import load_pruned
from prunekit.adapters import get_adapter
from prunekit.cli import main
from prunekit.errors import ConfigError
from prunekit.importance.structured import score_layers, score_units
from prunekit.methods.structured import StructuredConfig, prune_structured
from prunekit.pruned_models import save_pruned
from prunekit.pruning.gates import UnitGates
from prunekit.pruning.surgery import drop_layers, prune_heads, prune_neurons
from prunekit.pruning.units import keep_counts, rearrange, select_top
from prunekit.pruning.vocabulary import corpus_token_ids, prune_vocabulary
from tests.conftest import NEGATIVE, POSITIVE, cli
from tests.tiny import tiny_config, tiny_model, tiny_tokenizer

ENCODERS = ("bert", "roberta", "distilbert")
FAMILIES = (*ENCODERS, "llama")  # the tiny Llama has 8 query heads in 2 KV groups (GQA)
SENTENCES = POSITIVE + NEGATIVE


def tiny(family: str, seed: int = 0):
    return tiny_model(family, seed).eval()


def batch(count: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, 60, (count, 12), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, 8:] = 0  # padding in one row
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": torch.arange(count) % 2}


def logits(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(**{k: v for k, v in inputs.items() if k != "labels"}).logits


def random_keep(adapter, seed: int) -> tuple[dict, dict]:
    """Random kept heads (valid under GQA) and neurons per layer; the last layer keeps no heads."""
    generator = torch.Generator().manual_seed(seed)
    heads, neurons = {}, {}
    layers = adapter.layers()
    for i, layer in enumerate(layers):
        attn = layer.attention
        scores = torch.rand(attn.num_heads, generator=generator)
        groups = attn.num_kv_heads if attn.heads_per_kv_group > 1 else 1
        count = 0 if i == len(layers) - 1 else max(groups, attn.num_heads // 2)
        heads[i] = select_top([scores], [count], groups)[0]
        neurons[i] = torch.randperm(layer.ffn.num_neurons, generator=generator)[: layer.ffn.num_neurons // 3].tolist()
    return heads, neurons


def masked_logits(model, heads: dict, neurons: dict, inputs) -> torch.Tensor:
    with UnitGates(get_adapter(model)) as gates:
        for i, kept in heads.items():
            gates.heads[i].zero_()[kept] = 1
        for i, kept in neurons.items():
            gates.neurons[i].zero_()[kept] = 1
        return logits(model, inputs)


# ---------------------------------------------------------------- surgery


@pytest.mark.parametrize("family", FAMILIES)
def test_removing_units_gives_the_outputs_of_masking_them(family):
    """Heads (incl. a layer left with none) and neurons removed physically == gated to zero."""
    model, inputs = tiny(family), batch()
    adapter = get_adapter(model)
    heads, neurons = random_keep(adapter, seed=1)
    expected = masked_logits(model, heads, neurons, inputs)
    params_before = sum(p.numel() for p in model.parameters())
    prune_heads(adapter, heads)
    prune_neurons(adapter, neurons)
    assert sum(p.numel() for p in model.parameters()) < params_before
    assert [layer["heads"] for layer in adapter.describe()] == [len(heads[i]) for i in sorted(heads)]
    torch.testing.assert_close(logits(model, inputs), expected, atol=1e-5, rtol=0)


def test_gqa_keeps_query_heads_evenly_within_kv_groups():
    model = tiny("llama")
    adapter = get_adapter(model)
    attn = adapter.layers()[0].attention
    assert (attn.num_heads, attn.num_kv_heads) == (8, 2)
    with pytest.raises(ConfigError, match="evenly"):
        prune_heads(adapter, {0: [0, 1, 4]})  # two heads in group 0, one in group 1
    with pytest.raises(ConfigError, match="evenly"):
        prune_heads(adapter, {0: [0, 1, 2, 4]})  # 3 + 1: as many heads as 2 + 2, still uneven
    prune_heads(adapter, {0: [1, 2, 5, 7], 1: [0, 1, 2, 3]})  # layer 1: all of group 0, so group 1 goes
    first, second = adapter.describe()
    assert (first["heads"], first["kv_heads"]) == (4, 2)
    assert (second["heads"], second["kv_heads"]) == (4, 1)
    assert adapter.layers()[0].attention.module.num_key_value_groups == 2
    assert adapter.layers()[1].attention.module.num_key_value_groups == 4
    logits(model, batch())  # still runs


@pytest.mark.parametrize("family", FAMILIES)
def test_dropping_layers_renumbers_and_updates_config(family):
    model = tiny(family)
    adapter = get_adapter(model)
    kept_layer = adapter.layer_list()[1]
    drop_layers(adapter, [1])
    assert list(adapter.layer_list()) == [kept_layer]
    assert model.config.num_hidden_layers == 1
    assert all(m.layer_idx == 0 for m in kept_layer.modules() if hasattr(m, "layer_idx"))
    logits(model, batch())


# ---------------------------------------------------------------- importance and selection


def test_keep_counts_global_uniform_and_guards():
    scores = [torch.tensor([9.0, 8, 7, 6]), torch.tensor([1.0, 0.5, 0.2, 0.1])]
    assert keep_counts(scores, 0.5, "global", minimum=0) == [4, 0]
    assert keep_counts(scores, 0.5, "global", minimum=1) == [4, 1]  # nothing reaches zero width
    assert keep_counts(scores, 0.5, "uniform") == [2, 2]
    wide = [torch.rand(100), torch.rand(100)]
    assert all(c % 8 == 0 for c in keep_counts(wide, 0.37, "uniform", multiples=8))
    assert keep_counts(scores, 0.25, "uniform", multiples=[2, 2]) == [2, 2]  # GQA: a multiple of the KV groups


@pytest.mark.parametrize("criterion", ["magnitude", "taylor", "fisher", "activation"])
def test_a_dead_head_and_neuron_score_lowest(criterion):
    """A head whose weights are all zero contributes nothing: every criterion must score it 0, the
    lowest in its layer (same for an FFN neuron with zero weights)."""
    model = tiny("bert")
    adapter = get_adapter(model)
    layer = adapter.layers()[0]
    d = layer.attention.head_dim
    with torch.no_grad():
        for projection in (layer.attention.query, layer.attention.key, layer.attention.value):
            projection.weight[2 * d : 3 * d] = 0
            projection.bias[2 * d : 3 * d] = 0
        layer.attention.output.weight[:, 2 * d : 3 * d] = 0
        layer.ffn.down.weight[:, 5] = 0
        layer.ffn.up.weight[5] = 0
        layer.ffn.up.bias[5] = 0
    scores = score_units(criterion, adapter, [batch(8, seed=s) for s in range(3)])
    assert int(scores.heads[0].argmin()) == 2
    assert int(scores.neurons[0].argmin()) == 5
    assert float(scores.heads[0][2]) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_fisher_sums_each_examples_squared_gate_gradient(family):
    """One backward pass per batch with a gate row per example gives every example's own gradient: the
    scores equal Σ (∂L_i/∂gate)² from one-example backward passes (before the per-layer normalisation)."""
    model = tiny(family)
    adapter = get_adapter(model)
    inputs = batch(4, seed=1)
    inputs["attention_mask"][0, 8:] = 1  # no padding: alone, each example sees the same tokens as in the batch
    expected = None
    for i in range(4):
        with UnitGates(adapter, requires_grad=True) as gates:
            model(**{key: value[i : i + 1] for key, value in inputs.items()}).loss.backward()
            squares = [g.grad.pow(2) for g in gates.heads + gates.neurons]
        expected = squares if expected is None else [e + s for e, s in zip(expected, squares)]
    scores = score_units("fisher", adapter, [inputs])
    for got, want in zip(scores.heads + scores.neurons, expected):
        assert torch.allclose(got, want / want.norm(), atol=1e-5)
    taylor = score_units("taylor", adapter, [inputs])  # |Σ_i g_i| differs from Σ_i g_i²
    assert not torch.allclose(taylor.heads[0], scores.heads[0], atol=1e-3)


@pytest.mark.parametrize("criterion", ["drop-one", "block-influence"])
def test_a_pass_through_layer_is_the_one_dropped(criterion):
    """A pre-norm Llama layer with zero output projections is the identity: skipping it changes
    nothing (drop-one 0) and its output equals its input (block influence 0)."""
    model = tiny("llama")
    adapter = get_adapter(model)
    with torch.no_grad():
        layer = adapter.layers()[0]
        layer.attention.output.weight.zero_()
        layer.ffn.down.weight.zero_()
    scores = score_layers(criterion, adapter, [batch()])
    assert float(scores[0]) == pytest.approx(0.0, abs=1e-5)
    assert abs(float(scores[1])) > 1e-4
    if criterion == "block-influence":  # >= 0 by construction, so the identity layer ranks last
        result = prune_structured(model, StructuredConfig(layers=1, layer_importance=criterion), [batch()])
        assert result["kept_layers"] == [1]


@pytest.mark.parametrize("family", FAMILIES)
def test_global_taylor_pruning_gives_uneven_widths_that_train(family):
    model = tiny(family)
    model.train()
    result = prune_structured(model, StructuredConfig(importance="taylor", heads=0.5, ffn=0.4, round_to=1), [batch(8)])
    widths = [layer["ffn"] for layer in result["structure"]]
    assert len(set(widths)) > 1
    heads = [layer["heads"] for layer in result["structure"]]
    assert sum(heads) == pytest.approx(0.5 * 2 * tiny_config(family).num_attention_heads, abs=2)
    loss = model(**batch()).loss
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad and p.numel())


def test_params_budget_is_met():
    model = tiny("bert")
    total = sum(p.numel() for p in model.parameters())
    budget = int(total * 0.85)
    result = prune_structured(model, StructuredConfig(importance="magnitude", params_budget=budget))
    after = sum(p.numel() for p in model.parameters())
    assert after <= budget
    assert after >= budget - 0.02 * total  # close to the budget, not far below it
    assert 0 < result["budget_keep_fraction"] < 1


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_iterative_pruning_rescores_the_smaller_model_and_ends_at_the_target(family, monkeypatch):
    import prunekit.methods.structured as structured

    seen = []
    score = structured.score_units

    def recording(name, adapter, batches, seed=0):
        seen.append(sum(layer.ffn.num_neurons for layer in adapter.layers()))
        return score(name, adapter, batches, seed)

    monkeypatch.setattr(structured, "score_units", recording)
    model = tiny(family)
    neurons = 2 * tiny_config(family).intermediate_size
    result = prune_structured(
        model, StructuredConfig(importance="taylor", heads=0.5, ffn=0.25, iterations=3, round_to=1), [batch(8)]
    )
    assert seen == [neurons, round(neurons * 0.75), round(neurons * 0.5)]  # scored 3 times, each time smaller
    assert sum(layer["ffn"] for layer in result["structure"]) == neurons // 4
    assert sum(layer["heads"] for layer in result["structure"]) == tiny_config(family).num_attention_heads
    assert result["iterations"] == 3


# ---------------------------------------------------------------- save / reload


@pytest.mark.parametrize("family", FAMILIES)
def test_uneven_structure_round_trips_through_load_pruned_and_auto_class(family, tmp_path):
    model = tiny(family)
    adapter = get_adapter(model)
    heads, neurons = random_keep(adapter, seed=2)
    prune_heads(adapter, heads)
    prune_neurons(adapter, neurons)
    inputs = batch()
    expected = logits(model, inputs)
    assert save_pruned(model, tmp_path) == "prunekit"
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == f"prunekit_{tiny_config(family).model_type}"
    assert [layer["heads"] for layer in config["prunekit_structure"]] == [len(heads[i]) for i in sorted(heads)]
    for loaded in (load_pruned(tmp_path), AutoModelForSequenceClassification.from_pretrained(tmp_path)):
        assert get_adapter(loaded).describe() == adapter.describe()
        torch.testing.assert_close(logits(loaded.eval(), inputs), expected, atol=0, rtol=0)


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_uniform_structure_saves_as_a_vanilla_model(family, tmp_path):
    """Dropped layers + the same FFN width everywhere (+ uniform heads where the config states the
    head size) load with plain transformers, without prunekit imported."""
    model = tiny(family)
    config = StructuredConfig(importance="magnitude", ffn=0.5, layers=1, layer_importance="block-influence")
    if family == "llama":
        config.heads = 0.5
    config.scope = "uniform"
    prune_structured(model, config, [batch()])
    inputs = batch()
    expected = logits(model, inputs)
    assert save_pruned(model, tmp_path) == "plain"
    torch.save(inputs, tmp_path / "inputs.pt")
    torch.save(expected, tmp_path / "expected.pt")
    script = (
        "import sys, torch\n"
        "from transformers import AutoModelForSequenceClassification as A\n"
        "m = A.from_pretrained(sys.argv[1]).eval()\n"
        "assert 'prunekit' not in sys.modules\n"
        "x = torch.load(sys.argv[1] + '/inputs.pt'); x.pop('labels')\n"
        "with torch.no_grad(): out = m(**x).logits\n"
        "torch.testing.assert_close(out, torch.load(sys.argv[1] + '/expected.pt'), atol=0, rtol=0)\n"
        "print(type(m).__name__)\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Prunekit" not in result.stdout


# ---------------------------------------------------------------- vocabulary


def test_vocabulary_pruning_keeps_corpus_logits(tmp_path):
    model, tokenizer = tiny("bert"), tiny_tokenizer()
    corpus = SENTENCES[:6]
    before = {s: logits(model, tokenizer(s, return_tensors="pt")) for s in corpus}
    old_vocab = model.get_input_embeddings().num_embeddings
    new_tokenizer, kept = prune_vocabulary(model, tokenizer, corpus_token_ids(tokenizer, corpus))
    assert len(kept) < old_vocab
    assert model.get_input_embeddings().num_embeddings == len(kept) == model.config.vocab_size
    assert len(new_tokenizer) == len(kept)
    for sentence in corpus:
        ids = new_tokenizer(sentence, return_tensors="pt")
        assert [kept[i] for i in ids["input_ids"][0]] == tokenizer(sentence)["input_ids"]
        torch.testing.assert_close(logits(model, ids), before[sentence], atol=1e-6, rtol=0)
    # and after a save/load round trip (plain format: a smaller vocab_size)
    assert save_pruned(model, tmp_path) == "plain"
    new_tokenizer.save_pretrained(tmp_path)
    cli_model = load_pruned(tmp_path).eval()
    from transformers import AutoTokenizer

    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    sentence = corpus[0]
    torch.testing.assert_close(
        logits(cli_model, reloaded(sentence, return_tensors="pt")), before[sentence], atol=1e-6, rtol=0
    )


# ---------------------------------------------------------------- command line


@pytest.fixture(scope="module")
def structured(tmp_path_factory, tiny_bert, sentiment_dir):
    out = tmp_path_factory.mktemp("structured") / "pruned"
    code = cli(
        f"prune structured --model {tiny_bert} --data {sentiment_dir} --heads 0.5 --ffn 0.5 "
        f"--vocab-from {sentiment_dir} --calibration-samples 32 --max-length 16 --out {out}"
    )
    assert code == 0
    return out


def test_cli_structured_writes_summary_and_reloadable_model(structured, tiny_bert, sentiment_dir, tmp_path):
    summary = json.loads((structured / "summary.json").read_text())
    assert summary["method"] == "structured" and summary["importance"] == "taylor"
    assert summary["params_total"] < summary["params_before"]
    assert len(summary["structure"]) == 2 and summary["kept_layers"] == [0, 1]
    assert sum(layer["heads"] for layer in summary["structure"]) == 4
    assert summary["vocab_after"] < summary["vocab_before"]
    assert "accuracy" in summary["metrics"]
    code = cli(f"evaluate --model {structured} --data {sentiment_dir} --max-length 16 --json {tmp_path}/e.json")
    assert code == 0
    evaluated = json.loads((tmp_path / "e.json").read_text())
    assert evaluated["metrics"] == pytest.approx(summary["metrics"])
    code = cli(
        f"bench --model {structured} --vs {tiny_bert} --batch-size 2 --seq-len 8 --repeats 2 --json {tmp_path}/b.json"
    )
    assert code == 0
    bench = json.loads((tmp_path / "b.json").read_text())
    assert bench["ratio_vs"] > 0 and bench["vs"]["params_total"] > bench["params_total"]


@pytest.mark.parametrize(
    "flags, message",
    [
        ("--heads 0", "--heads 0: expected a number in (0, 1]"),
        ("--ffn 1.5", "--ffn 1.5"),
        ("--layers 5", "--layers 5: the model has 2 layers"),
        ("--params-budget 10", "--params-budget 10: cannot be met"),
        ("", "nothing to prune"),
    ],
)
def test_cli_impossible_targets_exit_2_with_one_line(flags, message, tiny_bert, sentiment_dir, tmp_path, capsys):
    code = main(
        f"prune structured --model {tiny_bert} --data {sentiment_dir} {flags} --importance magnitude "
        f"--out {tmp_path}/x".split()
    )
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("family", FAMILIES)
def test_flops_after_agrees_with_torchs_flop_counter(family):
    """The analytic FLOPs of the layers change by exactly what torch's counter sees when units go."""
    from prunekit.evaluation import count_flops
    from prunekit.methods.structured import flops_after

    model = tiny(family)
    model.set_attn_implementation("eager")  # torch's counter sees eager attention's matmuls (not CPU SDPA)
    adapter = get_adapter(model)
    inputs = {"input_ids": torch.randint(5, 60, (1, 12)), "attention_mask": torch.ones(1, 12, dtype=torch.long)}
    layers = adapter.layers()
    dense_counts = [layer.attention.num_heads for layer in layers], [layer.ffn.num_neurons for layer in layers]
    before, analytic_before = count_flops(model, inputs), flops_after(adapter, *dense_counts, 12)
    groups = layers[0].attention.num_kv_heads if layers[0].attention.heads_per_kv_group > 1 else 1
    heads = {0: list(range(dense_counts[0][0] // 2)) if groups == 1 else [0, 4], 1: [0, 1, 2, 3]}
    prune_heads(adapter, heads)
    prune_neurons(adapter, {0: list(range(10)), 1: list(range(33))})
    layers = adapter.layers()
    now = [layer.attention.num_heads for layer in layers], [layer.ffn.num_neurons for layer in layers]
    assert before - count_flops(model, inputs) == analytic_before - flops_after(adapter, *now, 12)


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_a_flops_budget_is_met_by_one_keep_fraction(family):
    from prunekit.methods.structured import flops_after

    model = tiny(family)
    adapter = get_adapter(model)
    layers = adapter.layers()
    dense = flops_after(adapter, [a.attention.num_heads for a in layers], [a.ffn.num_neurons for a in layers], 16)
    report = prune_structured(model, StructuredConfig(importance="magnitude", flops_budget=0.5, flops_seq_len=16))
    layers = adapter.layers()
    after = flops_after(adapter, [a.attention.num_heads for a in layers], [a.ffn.num_neurons for a in layers], 16)
    assert 0.35 * dense < after <= 0.5 * dense  # the largest fraction that fits (units are coarse in tiny models)
    assert 0 < report["budget_keep_fraction"] < 1


def test_prune_structured_flops_budget_and_calibration_seed_on_the_cli(tiny_bert, sentiment_dir, tmp_path):
    base = f"prune structured --model {tiny_bert} --data {sentiment_dir} --max-length 16 --calibration-samples 8"
    summaries = {}
    for name, flags in (("a", "--calibration-seed 1"), ("b", "--calibration-seed 1"), ("c", "--calibration-seed 2")):
        assert cli(f"{base} --flops-budget 0.5 {flags} --out {tmp_path / name}") == 0
        summaries[name] = json.loads((tmp_path / name / "summary.json").read_text())
    assert summaries["a"]["calibration"] == {"samples": 8, "seed": 1}
    assert summaries["a"]["structure"] == summaries["b"]["structure"]  # the same draw, the same model
    logits = {name: _cli_logits(tmp_path / name) for name in "abc"}
    assert torch.equal(logits["a"], logits["b"]) and not torch.equal(logits["a"], logits["c"])  # another draw


def _cli_logits(folder) -> torch.Tensor:
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        return model(**batch()).logits


@pytest.mark.parametrize(
    "flags, message",
    [
        ("--flops-budget 1.5", "--flops-budget 1.5"),
        ("--flops-budget 0.5 --params-budget 20k", "pass one budget"),
        ("--flops-budget 0.5 --heads 0.5 --ffn 0.5", "--flops-budget: leave --heads or --ffn unset"),
    ],
)
def test_bad_flops_budgets_exit_2(flags, message, tiny_bert, sentiment_dir, tmp_path, capsys):
    code = cli(f"prune structured --model {tiny_bert} --data {sentiment_dir} {flags} --out {tmp_path}/x")
    assert code == 2 and message in capsys.readouterr().err and not (tmp_path / "x").exists()


def _removal_cost(kept: list[int], fisher: torch.Tensor) -> float:
    removed = torch.ones(fisher.shape[0], dtype=torch.float64)
    removed[kept] = 0
    return float(removed @ fisher.double() @ removed)


def test_rearrange_swaps_away_from_correlated_removals():
    """Units 0 and 1 score lowest alone but their removals add up (F₀₁ > 0): removing 0 and 2 costs less."""
    fisher = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 1.1, 0.0, 0.0], [0.0, 0.0, 3.0, 0.0], [0.0, 0.0, 0.0, 3.0]])
    kept = rearrange([2, 3], fisher)
    assert len(kept) == 2 and 0 not in kept and 1 in kept
    assert _removal_cost(kept, fisher) == pytest.approx(4.0)


@pytest.mark.parametrize("groups", [1, 2])
def test_rearrange_ends_where_no_swap_helps_and_keeps_group_counts(groups):
    generator = torch.Generator().manual_seed(0)
    factors = torch.randn(40, 12, generator=generator)
    fisher = factors.T @ factors
    start = select_top([fisher.diagonal()], [6], groups)[0]
    kept = rearrange(start, fisher, groups)
    assert _removal_cost(kept, fisher) <= _removal_cost(start, fisher)
    per_group = [sum(1 for u in kept if u // (12 // groups) == g) for g in range(groups)]
    assert per_group == [6 // groups] * groups
    for p in kept:  # a local optimum: no single swap within a group lowers the cost
        for q in set(range(12)) - set(kept):
            if p // (12 // groups) == q // (12 // groups):
                swapped = sorted(set(kept) - {p} | {q})
                assert _removal_cost(swapped, fisher) >= _removal_cost(kept, fisher) - 1e-9


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_fisher_rearrange_prunes_to_the_same_counts_and_reports_moves(family):
    model = tiny(family)
    batches = [batch(8, seed=s) for s in range(2)]
    plain = prune_structured(tiny(family), StructuredConfig(heads=0.5, ffn=0.5, importance="fisher", round_to=1),
                             batches)  # fmt: skip
    config = StructuredConfig(heads=0.5, ffn=0.5, importance="fisher", rearrange=True, round_to=1)
    report = prune_structured(model, config, batches)
    assert report["structure"] == plain["structure"]
    layers = len(report["structure"])
    assert len(report["rearranged"]["heads"]) == len(report["rearranged"]["neurons"]) == layers
    with pytest.raises(ConfigError, match="--rearrange uses the Fisher matrices"):
        StructuredConfig(heads=0.5, rearrange=True)


def _lm_batch(count: int = 6, length: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
    ids = torch.randint(5, 60, (count, length), generator=torch.Generator().manual_seed(seed))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


def _tiny_lm():
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(tiny_config("llama")).eval()


@pytest.mark.parametrize("criterion", ["taylor", "fisher", "activation", "drop-one", "block-influence"])
@pytest.mark.parametrize("kind", ["classifier", "causal-lm"])
def test_scores_in_pieces_equal_whole_batch_scores(criterion, kind, monkeypatch):
    """A batch scored in pieces of one example (gradients summed over the pieces) scores as it does
    whole; a causal LM's loss is taken without its logits (the output head never runs)."""
    from prunekit.importance import structured as importance

    model = tiny("bert") if kind == "classifier" else _tiny_lm()
    batches = [batch(6, seed=s) for s in range(2)] if kind == "classifier" else [_lm_batch(seed=s) for s in range(2)]
    adapter = get_adapter(model)
    score = score_layers if criterion in ("drop-one", "block-influence") else score_units
    whole = score(criterion, adapter, batches)
    calls, logits = [], []
    layer = adapter.layer_list()[0]
    handles = [layer.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))]
    if kind == "causal-lm":
        head = model.get_output_embeddings()  # logits would be vocabulary-wide outputs of the head
        handles.append(head.register_forward_hook(lambda module, args, output: logits.append(output.shape[-1])))
    monkeypatch.setattr(importance, "PIECE_TOKENS", 1)  # one example a pass
    pieces = score(criterion, adapter, batches)
    for handle in handles:
        handle.remove()
    assert calls and set(calls) == {1}  # every pass saw one example
    assert model.config.vocab_size not in logits  # the causal LM's loss came without its logits
    flat = (lambda s: s) if score is score_layers else (lambda s: torch.cat(s.heads + s.neurons))
    assert torch.allclose(flat(pieces), flat(whole), rtol=1e-4, atol=1e-6)
