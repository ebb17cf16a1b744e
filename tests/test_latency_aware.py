"""--latency-aware: widths chosen for the most score within the measured latency of uniform widths."""

from __future__ import annotations

import json
import random

import pytest
import torch

from prunekit.methods import speed
from prunekit.methods.speed import LatencyTable, measure_latency_table
from prunekit.models import load_model
from prunekit.pruning.units import keep_counts, latency_counts
from tests.conftest import cli
from tests.test_workflow import interrupt_in_stage


def test_a_width_as_fast_as_a_narrower_one_is_kept_whole():
    scores = [torch.arange(8, 0, -1).float() * (3 - layer) for layer in range(3)]
    costs = {2: 2.0, 4: 4.0, 6: 4.0, 8: 8.0}  # 6 units run as fast as 4 on this machine
    assert keep_counts(scores, 0.5, "uniform", 1, 2) == [4, 4, 4]
    assert latency_counts(scores, 0.5, costs, 1, 2) == [6, 6, 6]  # more units, the same latency


def test_with_linear_costs_the_scores_decide_where_the_width_goes():
    scores = [torch.full((8,), 10.0), torch.ones(8), torch.ones(8)]
    costs = {c: float(c) for c in (2, 4, 6, 8)}
    assert latency_counts(scores, 0.5, costs, 2, 2) == [8, 2, 2]
    dead = [torch.tensor([5.0] * 4 + [-torch.inf] * 4), torch.ones(8), torch.ones(8)]
    assert latency_counts(dead, 0.5, costs, 2, 2)[0] <= 4  # pruned units never come back


def test_latency_counts_never_cost_more_than_the_uniform_widths():
    rng = random.Random(0)
    for _ in range(50):
        costs = {c: rng.uniform(0.5, 1.0) * c + rng.uniform(0, 3) for c in range(4, 33, 4)}
        scores = [torch.rand(32) * rng.uniform(0.1, 10) for _ in range(4)]
        fraction = rng.uniform(0.2, 0.9)
        uniform = keep_counts(scores, fraction, "uniform", 1, 4)
        counts = latency_counts(scores, fraction, costs, 1, 4)
        assert all(c in costs for c in counts)
        assert sum(costs[c] for c in counts) <= sum(costs[c] for c in uniform) * (1 + 1e-3)
        kept = sum(float(torch.sort(s, descending=True).values[:c].sum()) for s, c in zip(scores, counts))
        kept_uniform = sum(float(torch.sort(s, descending=True).values[:c].sum()) for s, c in zip(scores, uniform))
        assert kept >= kept_uniform - 1e-4  # the uniform widths are one of the candidates


def test_timer_noise_is_fitted_away_monotonically():
    assert speed._monotone([1.0, 3.0, 2.0, 4.0]) == [1.0, 2.5, 2.5, 4.0]
    assert speed._monotone([3.0, 2.0, 1.0]) == [2.0, 2.0, 2.0]
    assert speed._monotone([1.0, 2.0]) == [1.0, 2.0]


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_the_table_times_every_width_a_layer_may_keep(family, tmp_path):
    from tests.tiny import save_tiny_model

    model, _ = load_model(str(save_tiny_model(family, tmp_path / family)))
    table = measure_latency_table(model, (2, 16), round_to=16, repeats=2)
    groups = 2 if family == "llama" else 1  # the tiny Llama: 8 query heads in 2 KV groups
    heads = model.config.num_attention_heads
    assert sorted(table.heads) == list(range(groups, heads + 1, groups))
    assert sorted(table.ffn) == list(range(16, model.config.intermediate_size + 1, 16))
    for costs in (table.heads, table.ffn):
        values = [costs[count] for count in sorted(costs)]
        assert values[0] > 0 and values == sorted(values)  # a wider layer is never recorded as faster
    assert LatencyTable.from_dict(json.loads(json.dumps(table.__dict__))) == table


def _fake_table(ffn: dict[int, float]):
    def measure(model, shape=(32, 128), round_to=32, threads=None, repeats=7):
        return LatencyTable({h: h / 4 for h in range(1, 5)}, ffn, shape)

    return measure


@pytest.mark.parametrize(
    "command",
    [
        "prune structured --importance magnitude",
        "finetune --prune adaptive --epochs 2 --max-length 16 --prune-every 1",
    ],
)
def test_latency_aware_keeps_a_width_that_costs_no_more(command, tiny_bert, sentiment_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(speed, "measure_latency_table", _fake_table({16: 0.4, 32: 0.6, 48: 0.6, 64: 1.0}))
    out = tmp_path / "out"
    flags = f"--model {tiny_bert} --data {sentiment_dir} --out {out} --ffn 0.5 --round-to 16 --latency-aware"
    assert cli(f"{command} {flags}") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [layer["ffn"] for layer in summary["structure"]] == [48, 48]  # 48 neurons cost what 32 do
    table = summary["latency_table"] if "latency_table" in summary else summary["adaptive"]["latency"]
    assert table["ffn"]["48"] == 0.6  # recorded


def test_compress_latency_aware_resumes_with_the_table_it_measured(tiny_bert, sentiment_dir, tmp_path, monkeypatch):
    tables = iter([{16: 0.4, 32: 0.6, 48: 0.6, 64: 1.0}, {16: 0.4, 32: 0.6, 48: 0.9, 64: 1.0}])
    monkeypatch.setattr(speed, "measure_latency_table", lambda *a, **k: _fake_table(next(tables))(*a, **k))
    out = tmp_path / "out"
    command = (
        f"compress --model {tiny_bert} --data {sentiment_dir} --out {out} --stage-steps 4 --batch-size 16 "
        "--max-length 16 --ffn 0.5 --round-to 16 --latency-aware"
    )
    resume_training = interrupt_in_stage(monkeypatch)
    assert cli(command) == 130
    resume_training()
    assert cli(f"{command} --resume") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["latency"]["ffn"]["48"] == 0.6  # the first measurement, not a new one
    assert [layer["ffn"] for layer in summary["stages"][-1]["extra"]["structure"]] == [48, 48]


def test_latency_aware_is_refused_under_torchrun(tiny_bert, sentiment_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    out = tmp_path / "out"
    assert cli(f"compress --model {tiny_bert} --data {sentiment_dir} --out {out} --ffn 0.5 --latency-aware") == 2
    assert "--latency-aware times the model in each process" in capsys.readouterr().err
