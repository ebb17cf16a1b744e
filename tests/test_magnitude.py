"""Unstructured pruning: exact counts, N:M, masks that hold through training, save/load, bad input."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification, Trainer, TrainerCallback

from prunekit.adapters import get_adapter
from prunekit.cli import main
from prunekit.data import load_task_data
from prunekit.errors import ConfigError
from prunekit.methods.gradual import SparsityCallback
from prunekit.methods.magnitude import MagnitudeConfig, compute_masks, prune_magnitude
from prunekit.models import load_model
from prunekit.pruning.masks import MASKS_FILE, MaskSet
from prunekit.pruning.schedules import CubicSchedule
from prunekit.pruning.select import select_global, select_layerwise, select_n_m, select_rows
from prunekit.pruning.sparse_format import SPARSE_FILE, load_sparse
from prunekit.training import FinetuneConfig, finetune
from tests.conftest import cli
from tests.tiny import tiny_model


def tiny(family="bert", seed=0):
    return tiny_model(family, seed)


def pruned_count(masks) -> int:
    return sum(int((~m).sum()) for m in masks.values())


# ---------------------------------------------------------------- selection


@pytest.mark.parametrize("sparsity", [0.1, 0.5, 0.7, 0.9, 0.333])
def test_global_selection_matches_a_full_sort(sparsity):
    """Radix selection prunes exactly the k smallest scores, the same set a full sort would pick."""
    torch.manual_seed(1)
    scores = {"a": torch.rand(37, 50), "b": torch.rand(64, 16) * 3, "c": torch.rand(5, 7) * 0.1}
    masks = select_global({k: (lambda v=v: v) for k, v in scores.items()}, sparsity)
    k = round(sparsity * sum(v.numel() for v in scores.values()))
    assert pruned_count(masks) == k
    threshold = torch.cat([v.flatten() for v in scores.values()]).sort().values[k - 1]
    for name, value in scores.items():
        assert torch.equal(~masks[name], value <= threshold)


def test_ties_at_the_threshold_neither_overshoot_nor_undershoot():
    """All-equal scores: any threshold ties everything, yet exactly the requested count is pruned."""
    scores = {"a": torch.ones(10, 10), "b": torch.full((3, 3), 2.0), "c": torch.zeros(4, 4)}
    fns = {k: (lambda v=v: v) for k, v in scores.items()}
    assert pruned_count(select_global(fns, 0.5)) == round(0.5 * 125)
    layer = select_layerwise(fns, 0.3)
    assert [int((~m).sum()) for m in layer.values()] == [30, 3, 5]


def test_n_m_pattern_holds_in_every_group():
    torch.manual_seed(0)
    scores = torch.rand(8, 16)
    keep = select_n_m(scores, 2, 4)
    groups = keep.reshape(8, 4, 4)
    assert (groups.sum(-1) == 2).all()
    kept_min = torch.where(groups, scores.reshape(8, 4, 4), torch.inf).min(-1).values
    dropped_max = torch.where(~groups, scores.reshape(8, 4, 4), -torch.inf).max(-1).values
    assert (kept_min >= dropped_max).all()


def test_row_selection_prunes_each_output_row_equally():
    keep = select_rows(torch.rand(6, 10), 0.3)
    assert ((~keep).sum(1) == 3).all()


# ---------------------------------------------------------------- one-shot pruning on models


@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert", "llama"])
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_requested_sparsity_reached_exactly_and_only_on_targets(family, scope):
    model = tiny(family)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    masks = prune_magnitude(model, MagnitudeConfig(sparsity=0.7, scope=scope))
    targets = {f"{n}.weight" for n in get_adapter(model).prunable_linears()}
    assert set(masks.masks) == targets
    total = sum(m.numel() for m in masks.masks.values())
    assert pruned_count(masks.masks) == (
        round(0.7 * total) if scope == "global" else sum(round(0.7 * m.numel()) for m in masks.masks.values())
    )
    for name, param in model.named_parameters():
        if name in targets:
            assert (param[~masks.masks[name]] == 0).all()
        else:  # embeddings, norms, biases, classifier untouched
            assert torch.equal(param, before[name]), name


def test_targets_and_exclude_patterns():
    model = tiny()
    masks = compute_masks(model, MagnitudeConfig(sparsity=0.5, targets=r"intermediate|classifier", exclude=r"layer\.1"))
    assert sorted(masks.masks) == ["bert.encoder.layer.0.intermediate.dense.weight", "classifier.weight"]


def test_wanda_weighs_magnitude_by_input_activity():
    """A weight on a loud input channel survives even when a quiet channel's weight is larger."""
    model = tiny()
    linear = get_adapter(model).layers()[0].ffn.up
    with torch.no_grad():
        linear.weight.fill_(1.0)
        linear.weight[:, 0] = 5.0  # large weights ...
    norms = torch.ones(linear.in_features)
    norms[0] = 1e-3  # ... on a nearly silent input channel
    from prunekit.importance.weights import wanda_scores

    scores = wanda_scores({"w": linear.weight}, {"w": norms})["w"]()
    keep = select_rows(scores, 0.5)
    assert not keep[:, 0].any() and ((~keep).sum(1) == linear.in_features // 2).all()


# ---------------------------------------------------------------- masks hold through training


class GradientProbe(TrainerCallback):
    """Records, just before each optimizer step, the largest gradient on a pruned weight."""

    def __init__(self, masks):
        self.masks, self.max_pruned_grad = masks, []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        params = dict(model.named_parameters())
        self.max_pruned_grad.append(max(float(params[n].grad[~m].abs().sum()) for n, m in self.masks.masks.items()))


def test_masked_weights_get_zero_gradient_and_stay_zero_after_adamw_steps(tiny_bert, sentiment_dir, tmp_path):
    model, tokenizer = load_model(str(tiny_bert))
    masks = prune_magnitude(model, MagnitudeConfig(sparsity=0.6))
    data = load_task_data(str(sentiment_dir), max_train_samples=80)
    probe = GradientProbe(masks)
    config = FinetuneConfig(epochs=1.0, batch_size=4, lr=1e-2, max_length=16, logging_steps=100)
    trainer = finetune(
        model, tokenizer, data.train, data.task, config, tmp_path, callbacks=[SparsityCallback(masks), probe]
    )
    assert trainer.state.global_step == 20
    assert probe.max_pruned_grad == [0.0] * 20
    params = dict(model.named_parameters())
    for name, mask in masks.masks.items():
        assert (params[name][~mask] == 0).all()
        state = trainer.optimizer.state[params[name]]
        assert (state["exp_avg"][~mask] == 0).all() and (state["exp_avg_sq"][~mask] == 0).all()
    assert any((params[n][m] != 0).all() for n, m in masks.masks.items()), "kept weights should still train"
    assert isinstance(trainer, Trainer)


def test_gradual_schedule_is_cubic_and_masks_are_monotone(tiny_bert, sentiment_dir, tmp_path):
    schedule = CubicSchedule(0.8, start=2, end=14, every=4)
    assert schedule.sparsity_at(1) == 0 and schedule.sparsity_at(14) == 0.8
    assert schedule.sparsity_at(8) == pytest.approx(0.8 * (1 - 0.5**3))
    model, tokenizer = load_model(str(tiny_bert))
    data = load_task_data(str(sentiment_dir))
    snapshots = []

    class Snapshot(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if callback.masks is not None:
                snapshots.append({n: m.clone() for n, m in callback.masks.masks.items()})

    callback = SparsityCallback(schedule=schedule, config=MagnitudeConfig(sparsity=0.8))
    finetune(
        model,
        tokenizer,
        data.train,
        data.task,
        FinetuneConfig(batch_size=4, max_length=16, epochs=0.75),
        tmp_path,
        callbacks=[callback, Snapshot()],
    )
    steps = [step for step, _ in callback.history]
    assert steps == [6, 10, 14]  # at step 2 the target is the initial sparsity, 0
    assert [s for _, s in callback.history] == sorted(s for _, s in callback.history)
    assert callback.history[-1][1] == pytest.approx(0.8, abs=1e-4)
    for earlier, later in itertools.pairwise(snapshots):
        assert all((later[n] <= earlier[n]).all() for n in earlier), "a pruned weight came back"


# ---------------------------------------------------------------- CLI, save/load


def test_prune_cli_then_continue_training_keeps_masks(tiny_bert, sentiment_dir, tmp_path):
    """prune -> saved with masks -> finetune from the pruned folder -> same weights still zero."""
    pruned = tmp_path / "pruned"
    assert (
        cli(f"prune magnitude --model {tiny_bert} --sparsity 0.5 --out {pruned} --data {sentiment_dir} --max-length 16")
        == 0
    )
    summary = json.loads((pruned / "summary.json").read_text())
    assert summary["sparsity"] == pytest.approx(0.5, abs=1e-4) and "accuracy" in summary["metrics"]
    assert len(summary["sparsity_per_module"]) == 12 and (pruned / MASKS_FILE).exists()
    vanilla = AutoModelForSequenceClassification.from_pretrained(pruned)  # plain transformers still loads it
    masks = MaskSet.load(pruned)

    tuned = tmp_path / "tuned"
    assert cli(f"finetune --model {pruned} --data {sentiment_dir} --out {tuned} --lr 1e-2 --max-length 16") == 0
    after = dict(AutoModelForSequenceClassification.from_pretrained(tuned).named_parameters())
    before = dict(vanilla.named_parameters())
    for name, mask in masks.masks.items():
        assert (after[name][~mask] == 0).all()
    assert any(not torch.equal(after[n], before[n]) for n in masks.masks), "training changed nothing"
    assert json.loads((tuned / "summary.json").read_text())["sparsity"] == pytest.approx(0.5, abs=1e-4)


def test_finetune_with_gradual_pruning_reaches_target(tiny_bert, sentiment_dir, tmp_path):
    out = tmp_path / "gradual"
    assert (
        cli(
            f"finetune --model {tiny_bert} --data {sentiment_dir} --out {out} --prune magnitude "
            "--sparsity 0.9 --prune-start 1 --prune-end 8 --prune-every 2 --batch-size 8 --max-length 16"
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sparsity"] == pytest.approx(0.9, abs=1e-4)
    assert MaskSet.load(out).sparsity() == pytest.approx(0.9, abs=1e-4)


def test_sparse_format_round_trips_bit_exact_and_shrinks(tiny_bert, tmp_path):
    dense, sparse = tmp_path / "dense", tmp_path / "sparse"
    for folder, fmt in ((dense, "dense"), (sparse, "sparse")):
        assert (
            main(
                [
                    "prune",
                    "magnitude",
                    "--model",
                    str(tiny_bert),
                    "--sparsity",
                    "0.9",
                    "--out",
                    str(folder),
                    "--save-format",
                    fmt,
                    "--targets",
                    ".",
                ]
            )
            == 0
        )
    reference = AutoModelForSequenceClassification.from_pretrained(dense).state_dict()
    restored = load_sparse(sparse).state_dict()
    assert reference.keys() == restored.keys()
    assert all(torch.equal(reference[k], restored[k]) for k in reference)
    ratio = (sparse / SPARSE_FILE).stat().st_size / (dense / "model.safetensors").stat().st_size
    # 10 % of the values + a 1-bit-per-weight mask (1/32 of float32), plus unpruned biases/norms and headers
    assert ratio < 0.25
    inputs = {"input_ids": torch.tensor([[2, 17, 11, 8, 3]])}
    via_prunekit = load_model(str(sparse))[0]  # prunekit's loader picks the sparse file up by itself
    dense_model = AutoModelForSequenceClassification.from_pretrained(dense).eval()
    assert torch.equal(via_prunekit(**inputs).logits, dense_model(**inputs).logits)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--sparsity", "1.5"], "--sparsity 1.5"),
        (["--pattern", "5:4"], "--pattern '5:4'"),
        (["--targets", "nothing_matches"], "no weight matrix matches"),
        (["--importance", "wanda"], "calibration"),
    ],
)
def test_bad_pruning_input_exits_2(flags, message, tiny_bert, tmp_path, capsys):
    code = main(["prune", "magnitude", "--model", str(tiny_bert), "--out", str(tmp_path / "o"), *flags])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_wanda_cli_prunes_each_row_exactly_with_calibration_data(tiny_bert, sentiment_dir, tmp_path):
    out = tmp_path / "wanda"
    assert (
        cli(
            f"prune magnitude --model {tiny_bert} --importance wanda --sparsity 0.5 "
            f"--data {sentiment_dir} --calibration-samples 16 --out {out}"
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["importance"] == "wanda" and summary["scope"] == "row"
    for mask in MaskSet.load(out).masks.values():
        assert ((~mask).sum(1) == mask.shape[1] // 2).all()
    magnitude = compute_masks(load_model(str(tiny_bert))[0], MagnitudeConfig(sparsity=0.5, scope="row"))
    assert any(not torch.equal(magnitude.masks[n], m) for n, m in MaskSet.load(out).masks.items()), (
        "activation statistics changed nothing"
    )


def test_schedule_starts_at_initial_sparsity_and_rejects_inverted_ranges():
    schedule = CubicSchedule(0.8, start=0, end=10, every=5, initial_sparsity=0.2)
    assert schedule.sparsity_at(0) == pytest.approx(0.2) and schedule.sparsity_at(10) == pytest.approx(0.8)
    assert [s for s in range(12) if schedule.is_pruning_step(s)] == [0, 5, 10]
    with pytest.raises(ConfigError, match="--initial-sparsity"):
        CubicSchedule(0.5, start=0, end=10, initial_sparsity=0.6)
    with pytest.raises(ConfigError, match="--prune-end"):
        CubicSchedule(0.5, start=10, end=5)


def test_bench_says_an_n_m_model_runs_dense_on_a_cpu(tiny_bert, tmp_path, capsys):
    from prunekit.evaluation.bench import nm_pattern

    nm, unstructured = tmp_path / "nm", tmp_path / "unstructured"
    assert cli(f"prune magnitude --model {tiny_bert} --pattern 2:4 --out {nm}") == 0
    assert cli(f"prune magnitude --model {tiny_bert} --sparsity 0.5 --scope layer --out {unstructured}") == 0
    assert nm_pattern(MaskSet.load(nm).masks) == "2:4"
    assert nm_pattern(MaskSet.load(unstructured).masks) is None
    capsys.readouterr()
    common = "--batch-size 2 --seq-len 8 --repeats 2 --warmup 1 --device cpu"
    assert cli(f"bench --model {nm} {common} --json {tmp_path / 'nm.json'}") == 0
    assert "2:4 zeros buy size" in capsys.readouterr().out
    assert json.loads((tmp_path / "nm.json").read_text())["sparse_kernels"]["used"] is False
    assert cli(f"bench --model {unstructured} {common} --json {tmp_path / 'u.json'}") == 0
    assert "sparse_kernels" not in json.loads((tmp_path / "u.json").read_text())
