"""Lottery tickets: rewinding, monotone masks, sparsity per round, controls, resume, CLI."""

from __future__ import annotations

import itertools
import json
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from prunekit.cli import main
from prunekit.errors import ConfigError
from prunekit.methods.lottery import REWIND_FILE, LotteryConfig, LotteryRun, random_masks_like, snapshot
from prunekit.methods.magnitude import resolve_targets
from prunekit.pruning.masks import MaskSet
from tests.conftest import cli
from tests.tiny import tiny_model


class FakeTraining:
    """Deterministic stand-in for fine-tuning: 4 'steps', each a state-dependent weight update.

    Records the weights each training starts from, holds the masks like SparsityCallback, and calls
    the step callbacks (so late-rewind capture sees steps 1..4).
    """

    def __init__(self):
        self.starts: list[tuple[dict[str, torch.Tensor], MaskSet | None]] = []

    def __call__(self, model, masks, callbacks) -> None:
        self.starts.append((snapshot(model), masks))
        for step in range(1, 5):
            with torch.no_grad():
                for param in model.parameters():
                    param.add_(0.05 * torch.sin(7 * param) + 0.01)
            if masks is not None:
                masks.apply(model)
            for callback in callbacks:
                callback.on_step_end(None, SimpleNamespace(global_step=step), None, model=model)


def evaluate(model) -> float:
    return float(sum(p.detach().abs().sum() for p in model.parameters())) % 1.0


def run(tmp_path, rounds=3, resume=False, model=None, training=None, **config):
    model = model if model is not None else tiny_model("bert")
    training = training or FakeTraining()
    config = LotteryConfig(rounds=rounds, prune_per_round=0.3, controls=False, **config)
    search = LotteryRun(model, config, tmp_path, training, evaluate)
    search.run(resume=resume)
    return search, training, model


@pytest.mark.parametrize("rewind", ["init", "step:2"])
def test_rewinding_restores_theta_for_survivors_and_zero_for_pruned(rewind, tmp_path):
    model = tiny_model("bert")
    theta0 = snapshot(model)
    _search, training, _ = run(tmp_path, model=model, rewind=rewind)
    theta = theta0 if rewind == "init" else load_file(str(tmp_path / REWIND_FILE))
    if rewind != "init":  # θK is the state after 2 of round 0's 4 steps, not θ0
        assert not torch.equal(theta["classifier.weight"], theta0["classifier.weight"])
    for start, masks in training.starts[1:]:  # every pruned round starts from the rewound weights
        for name, value in theta.items():
            if name in masks.masks:
                keep = masks.masks[name]
                assert torch.equal(start[name][keep], value[keep])
                assert bool((start[name][~keep] == 0).all())
            else:  # embeddings, norms, biases and the classifier head are rewound too
                assert torch.equal(start[name], value), name


def test_masks_are_monotone_and_sparsity_follows_the_schedule(tmp_path):
    search, _training, _ = run(tmp_path, rounds=4)
    masks = [MaskSet.load(search.round_dir(r)) for r in range(1, 5)]
    for earlier, later in itertools.pairwise(masks):
        for name, mask in later.masks.items():
            assert not bool((mask & ~earlier.masks[name]).any()), "a pruned weight came back"
    total = sum(m.numel() for m in masks[0].masks.values())
    for r, mask_set in enumerate(masks, start=1):
        assert mask_set.sparsity() == pytest.approx(1 - 0.7**r, abs=1 / total)
        assert search.results[r].sparsity == mask_set.sparsity()


def test_layer_scope_gives_every_matrix_the_round_sparsity(tmp_path):
    search, _, _ = run(tmp_path, rounds=2, scope="layer")
    for name, value in MaskSet.load(search.round_dir(2)).sparsity_per_module().items():
        assert value == pytest.approx(1 - 0.7**2, abs=0.01), name


def test_resume_after_an_interrupted_round_reproduces_the_final_masks(tmp_path):
    full, _, _ = run(tmp_path / "full", rounds=3)
    run(tmp_path / "killed", rounds=1)  # a run that died after round 1 ...
    (tmp_path / "killed" / "round-2.partial").mkdir()  # ... with a half-written round (ignored)
    resumed, training, _ = run(tmp_path / "killed", rounds=3, resume=True)
    assert len(training.starts) == 2  # only rounds 2 and 3 were trained again
    final_full = MaskSet.load(full.round_dir(3)).masks
    final_resumed = MaskSet.load(resumed.round_dir(3)).masks
    assert all(torch.equal(final_full[n], final_resumed[n]) for n in final_full)
    assert [r.ticket for r in resumed.results] == [r.ticket for r in full.results]


def test_random_control_has_the_tickets_per_matrix_sparsity():
    model = tiny_model("bert")
    names = list(resolve_targets(model))
    generator = torch.Generator().manual_seed(0)
    params = dict(model.named_parameters())
    ticket = MaskSet(
        {n: torch.rand(params[n].shape, generator=generator) > (0.2 + 0.1 * i) for i, n in enumerate(names)}
    )
    control = random_masks_like(ticket, seed=1)
    assert control.sparsity_per_module() == ticket.sparsity_per_module()
    assert any(not torch.equal(control.masks[n], ticket.masks[n]) for n in names)


def test_controls_run_at_the_same_sparsity(tmp_path):
    model = tiny_model("bert")
    training = FakeTraining()
    search = LotteryRun(model, LotteryConfig(rounds=1, prune_per_round=0.5), tmp_path, training, evaluate)
    (_result_dense, result) = search.run()
    assert result.random_mask is not None and result.one_shot is not None
    # trainings: dense, random control, one-shot control, ticket
    assert len(training.starts) == 4
    _, random_masks = training.starts[1]
    _, one_shot_masks = training.starts[2]
    assert random_masks.sparsity_per_module() == search.masks.sparsity_per_module()
    assert one_shot_masks.sparsity() == pytest.approx(search.masks.sparsity(), abs=1e-4)


def test_bad_lottery_settings_are_config_errors():
    with pytest.raises(ConfigError, match="--rewind"):
        LotteryConfig(rewind="epoch:3")
    with pytest.raises(ConfigError, match="--prune-per-round"):
        LotteryConfig(prune_per_round=1.0)


# ---------------------------------------------------------------- command line


def test_cli_lottery_rounds_plot_ticket_and_resume(tiny_bert, sentiment_dir, tmp_path):
    common = (
        f"lottery --model {tiny_bert} --data {sentiment_dir} --prune-per-round 0.5 --steps-per-round 3 "
        f"--batch-size 16 --lr 5e-3 --max-length 16 --tolerance 1.0"
    )
    assert cli(f"{common} --rounds 2 --out {tmp_path}/full") == 0
    summary = json.loads((tmp_path / "full" / "summary.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [0, 1, 2]
    assert summary["rounds"][2]["sparsity"] == pytest.approx(0.75, abs=1e-3)
    assert summary["search_seconds"] > 0
    assert all(r["random_mask"] is not None and r["one_shot"] is not None for r in summary["rounds"][1:])
    assert (tmp_path / "full" / "lottery.png").stat().st_size > 1000
    ticket = summary["winning_ticket"]
    assert ticket["round"] == 2  # tolerance 1.0: every round qualifies, the sparsest wins
    ticket_summary = json.loads((tmp_path / "full" / "ticket" / "summary.json").read_text())
    assert ticket_summary["sparsity"] == pytest.approx(0.75, abs=1e-3)
    assert cli(f"evaluate --model {tmp_path}/full/ticket --data {sentiment_dir} --max-length 16") == 0

    # a run stopped after round 1, resumed to round 2, ends with the same masks (real Trainer)
    assert cli(f"{common} --rounds 1 --out {tmp_path}/resumed") == 0
    assert cli(f"{common} --rounds 2 --out {tmp_path}/resumed --resume") == 0
    full = MaskSet.load(tmp_path / "full" / "round-2").masks
    resumed = MaskSet.load(tmp_path / "resumed" / "round-2").masks
    assert all(torch.equal(full[n], resumed[n]) for n in full)


def test_cli_resume_with_other_settings_exits_2(tiny_bert, sentiment_dir, tmp_path, capsys):
    common = f"lottery --model {tiny_bert} --data {sentiment_dir} --steps-per-round 1 --max-length 16 --no-controls"
    assert cli(f"{common} --rounds 1 --prune-per-round 0.5 --out {tmp_path}/run") == 0
    capsys.readouterr()
    code = main(f"{common} --rounds 2 --prune-per-round 0.3 --out {tmp_path}/run --resume".split())
    err = capsys.readouterr().err.strip()
    assert code == 2 and "prune_per_round" in err and len(err.splitlines()) == 1


def test_cli_lottery_with_lora_merges_into_sparse_weights(tiny_bert, sentiment_dir, tmp_path):
    """LoRA rounds: B·A is merged into the weights, and the mask is applied again after merging."""
    out = tmp_path / "lora"
    code = cli(
        f"lottery --model {tiny_bert} --data {sentiment_dir} --rounds 1 --prune-per-round 0.5 --steps-per-round 3 "
        f"--lora-rank 4 --lr 5e-2 --max-length 16 --no-controls --out {out}"
    )
    assert code == 0
    name = "bert.encoder.layer.0.attention.self.query.weight"
    theta0 = load_file(str(tiny_bert / "model.safetensors"))[name]
    trained = load_file(str(out / "round-1" / "model.safetensors"))[name]
    keep = MaskSet.load(out / "round-1").masks[name]
    assert bool((trained[~keep] == 0).all())
    assert not torch.allclose(trained[keep], theta0[keep])  # the LoRA update was merged in
    assert not any("lora" in key for key in load_file(str(out / "round-1" / "model.safetensors")))
