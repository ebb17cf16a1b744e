"""Results that used to be silently wrong: a densified student, LoRA training a different network
than the one merged, masks that made a sparse model larger than reported, rounds that were not models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from prunekit.data import load_task_data
from prunekit.methods.magnitude import MagnitudeConfig, compute_masks
from prunekit.models import load_model
from prunekit.pruning.masks import MASKS_FILE, MaskSet
from prunekit.training import FinetuneConfig
from prunekit.training.lora import finetune_lora_merged, lora_config
from tests.conftest import cli

TRAIN = "--max-length 16 --batch-size 16 --lr 5e-3"


@pytest.fixture(scope="module")
def masked(tmp_path_factory, tiny_bert) -> Path:
    out = tmp_path_factory.mktemp("masked") / "m"
    assert cli(f"prune magnitude --model {tiny_bert} --sparsity 0.6 --scope layer --out {out}") == 0
    return out


def _zeros_kept(folder: Path, masks: MaskSet) -> bool:
    weights = load_file(str(folder / "model.safetensors"))
    return all(bool((weights[name][~keep] == 0).all()) for name, keep in masks.masks.items())


def test_distill_keeps_a_pruned_students_masks(masked, tiny_bert, sentiment_dir, tmp_path):
    out = tmp_path / "student"
    assert cli(f"distill --teacher {tiny_bert} --student {masked} --data {sentiment_dir} --out {out} {TRAIN}") == 0
    masks = MaskSet.load(masked)
    assert _zeros_kept(out, masks)
    assert MaskSet.load(out).masks.keys() == masks.masks.keys()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sparsity"] == pytest.approx(0.6, abs=1e-3)
    assert summary["params_nonzero"] < summary["params_total"]


def test_distill_student_from_a_sparse_teachers_layers_stays_sparse(masked, sentiment_dir, tmp_path):
    out = tmp_path / "student"
    code = cli(f"distill --teacher {masked} --student-layers 1 --data {sentiment_dir} --out {out} {TRAIN}")
    assert code == 0
    masks = MaskSet.load(out)
    assert masks is not None and all(".layer.0." in name for name in masks.masks)  # layer 0 kept, layer 1 gone
    assert _zeros_kept(out, masks) and masks.sparsity() == pytest.approx(0.6, abs=1e-3)


class LogitsAtEnd(TrainerCallback):
    """The trained network's logits on a fixed batch, taken before the adapters are merged."""

    def __init__(self, batch):
        self.batch, self.logits = batch, None

    def on_train_end(self, args, state, control, model=None, **kwargs):
        model.eval()
        with torch.no_grad():
            self.logits = model(**self.batch).logits.clone()


def _lora_on_sparse(tiny_bert, sentiment_dir, tmp_path, hold: bool) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """(logits of the trained network, logits after merge + mask, pruned weights all zero)."""
    data = load_task_data(str(sentiment_dir))
    model, tokenizer = load_model(str(tiny_bert), data.task)
    masks = compute_masks(model, MagnitudeConfig(sparsity=0.5))
    masks.apply(model)
    probe = LogitsAtEnd(tokenizer(data.eval.text_a[:8], padding=True, return_tensors="pt"))
    config = FinetuneConfig(epochs=3, batch_size=16, lr=5e-2, max_length=16)
    lora = lora_config(model, 4)
    finetune_lora_merged(
        model, tokenizer, data.train, data.task, config, tmp_path, lora, [probe], masks=masks if hold else None
    )
    masks.apply(model)  # what lottery did after merging before masks were held in training
    model.eval()
    with torch.no_grad():
        merged = model(**probe.batch).logits
    params = dict(model.named_parameters())
    zeros = all(bool((params[name][~keep] == 0).all()) for name, keep in masks.masks.items())
    return probe.logits, merged, zeros


def test_lora_on_a_sparse_base_trains_the_network_it_merges(tiny_bert, sentiment_dir, tmp_path):
    trained, merged, zeros = _lora_on_sparse(tiny_bert, sentiment_dir, tmp_path, hold=True)
    torch.testing.assert_close(merged, trained, atol=1e-5, rtol=1e-5)
    assert zeros
    # the check has teeth: a LoRA update not masked in training is not the network that gets evaluated
    trained, merged, _ = _lora_on_sparse(tiny_bert, sentiment_dir, tmp_path, hold=False)
    assert not torch.allclose(merged, trained, atol=1e-3)


def test_masks_are_bits_and_size_bytes_is_what_ships(tiny_bert, tmp_path):
    dense, sparse = tmp_path / "dense", tmp_path / "sparse"
    assert cli(f"prune magnitude --model {tiny_bert} --sparsity 0.9 --out {dense}") == 0
    assert cli(f"prune magnitude --model {tiny_bert} --sparsity 0.9 --save-format sparse --out {sparse}") == 0
    masks = MaskSet.load(dense)
    weights = sum(mask.numel() for mask in masks.masks.values())
    file = (dense / MASKS_FILE).read_bytes()
    header = int.from_bytes(file[:8], "little")  # safetensors: 8-byte header length, JSON header, tensors
    assert len(file) - 8 - header <= weights / 8 + len(masks)  # one bit per weight (+ a byte's rounding each)
    assert not (sparse / MASKS_FILE).exists()  # the sparse format's bitmasks are the masks
    sparse_masks = MaskSet.load(sparse)
    assert all(torch.equal(sparse_masks.masks[n], masks.masks[n]) for n in masks.masks)
    for folder in (dense, sparse):
        shipped = sum(f.stat().st_size for f in folder.iterdir() if f.suffix == ".safetensors")
        assert json.loads((folder / "summary.json").read_text())["size_bytes"] == shipped
    dense_size = json.loads((dense / "summary.json").read_text())["size_bytes"]
    sparse_size = json.loads((sparse / "summary.json").read_text())["size_bytes"]
    assert sparse_size < 0.75 * dense_size


def test_lottery_rounds_are_model_folders(tiny_bert, sentiment_dir, tmp_path):
    out = tmp_path / "lottery"
    code = cli(
        f"lottery --model {tiny_bert} --data {sentiment_dir} --rounds 1 --steps-per-round 2 --no-controls "
        f"--max-length 16 --out {out}"
    )
    assert code == 0
    result = tmp_path / "round.json"
    assert cli(f"evaluate --model {out}/round-1 --data {sentiment_dir} --max-length 16 --json {result}") == 0
    metrics = json.loads((out / "round-1" / "metrics.json").read_text())
    assert json.loads(result.read_text())["metrics"]["accuracy"] == pytest.approx(metrics["ticket"])
