"""Hostile input through the real CLI: every bad case exits 2 with one line, and nothing is lost.

Each table row runs ``prunekit ...`` on tiny models and checks: exit code 2, a single stderr line
holding the expected words, no traceback, and the whole world (input models, data, an earlier
result, the current folder) byte-identical afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForSequenceClassification

from prunekit.cli import main
from prunekit.pruning.masks import MASKS_FILE
from tests.conftest import cli, tree_digest
from tests.tiny import tiny_config, tiny_tokenizer


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_bert, sentiment_dir) -> Path:
    """Everything a user owns: models (plain, masked, sparse, broken), data files, an earlier result."""
    root = tmp_path_factory.mktemp("world")
    shutil.copytree(tiny_bert, root / "model")
    shutil.copytree(sentiment_dir, root / "data" / "SST-2")
    assert cli(f"prune magnitude --model {root / 'model'} --sparsity 0.5 --out {root / 'masked'}") == 0
    assert (
        cli(f"prune magnitude --model {root / 'model'} --sparsity 0.5 --save-format sparse --out {root / 'sparse'}")
        == 0
    )
    (root / "old").mkdir()
    (root / "old" / "results.json").write_text('{"accuracy": 0.9}')
    (root / "cwd").mkdir()
    (root / "cwd" / "notes.txt").write_text("my notes")
    (root / "cwd" / "runs").mkdir()
    (root / "a-file").write_text("not a folder")

    def broken(name: str, source: str, damage) -> None:
        shutil.copytree(root / source, root / name)
        damage(root / name)

    def truncate(path: Path) -> None:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    broken("truncated", "model", lambda m: truncate(m / "model.safetensors"))
    broken("truncated-sparse", "sparse", lambda m: truncate(m / "model.sparse.safetensors"))
    broken("corrupt-masks", "masked", lambda m: (m / MASKS_FILE).write_bytes(b"\x00garbage" * 10))

    def wrong_shape_masks(m: Path) -> None:
        name = "bert.encoder.layer.0.attention.self.query.weight"
        save_file({name: torch.ones(3, 5, dtype=torch.bool)}, str(m / MASKS_FILE))

    broken("bad-mask-shape", "masked", wrong_shape_masks)

    def pickle_garbage(m: Path) -> None:
        (m / "model.safetensors").unlink()
        (m / "pytorch_model.bin").write_bytes(b"this is not a pickle")

    broken("bad-pickle", "model", pickle_garbage)

    def missing_tensor(m: Path) -> None:
        path = m / "model.sparse.safetensors"
        tensors = load_file(str(path))
        del tensors["classifier.bias"]
        save_file(tensors, str(path), metadata={"format": "prunekit-bitmask-v1"})

    broken("sparse-missing-tensor", "sparse", missing_tensor)

    own = root / "own"
    own.mkdir()
    (own / "nan-label.csv").write_text("text,label\na good film,1\nbad film,nan\n")
    (own / "empty-label.csv").write_text("text,label\na good film,1\nbad film,\n")
    (own / "extra-field.csv").write_text("text,label\na good film,1\nbad film,0,2\n")
    (own / "stray-quotes.csv").write_text('text,label\na good film,1\n"bad film,0\nawful,0\nfine",1\ngood,1\n')
    (own / "latin1.csv").write_bytes("text,label\ncafé noir,1\nbad,0\n".encode("latin-1"))
    (own / "inf-label.jsonl").write_text('{"text": "good", "label": 1}\n{"text": "bad", "label": Infinity}\n')
    glue_bad = root / "glue-bad" / "SST-2"
    glue_bad.mkdir(parents=True)
    (glue_bad / "train.tsv").write_text("sentence\tlabel\ngood\t1\nbroken line without a label\nbad\t0\n")
    (glue_bad / "dev.tsv").write_text("sentence\tlabel\ngood\t1\nbad\t0\t1\n")
    _round_two(root, broken)
    return root


def _edit_weights(folder: Path, edit) -> None:
    path = folder / "model.safetensors"
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path), metadata={"format": "pt"})


WORLD_RUN = {  # a finished run of two model stages and an evaluation, made with paths relative to the world
    "defaults": {"max_steps": 2, "batch_size": 8, "max_length": 16},
    "stages": [
        {"name": "tune", "method": "finetune"},
        {"name": "prune", "method": "prune-magnitude", "sparsity": 0.5},
        {"name": "check", "method": "evaluate"},
    ],
}


def _round_two(root: Path, broken) -> None:
    """The second round's world: models with a tensor missing, extra, NaN or overflowing; a base model
    without a head; a model of 64 positions; a finished run and damaged copies of it; hostile recipes."""
    import yaml
    from transformers import AutoModel

    query = "bert.encoder.layer.0.attention.self.query.weight"
    broken("missing-query", "model", lambda m: _edit_weights(m, lambda t: t.pop(query)))
    broken("missing-head", "model", lambda m: _edit_weights(m, lambda t: t.pop("classifier.weight")))
    broken("extra-tensor", "model", lambda m: _edit_weights(m, lambda t: t.update(extra=torch.zeros(3))))
    broken("nan-weight", "model", lambda m: _edit_weights(m, lambda t: t[query].view(-1)[5].fill_(float("nan"))))

    def overflow(tensors: dict) -> None:
        for name, tensor in tensors.items():
            if "dense.weight" in name:
                tensor.mul_(1e36)

    broken("overflow", "model", lambda m: _edit_weights(m, overflow))
    AutoModel.from_config(tiny_config("bert")).save_pretrained(root / "base")  # no task head
    tiny_tokenizer().save_pretrained(root / "base")
    short = tiny_config("bert")
    short.max_position_embeddings = 64
    AutoModelForSequenceClassification.from_config(short).save_pretrained(root / "short")
    tiny_tokenizer().save_pretrained(root / "short")
    (root / "own" / "one-class.csv").write_text("text,label\ngood,1\nfine,1\ngreat,1\n")

    recipes = root / "recipes"
    recipes.mkdir()
    (recipes / "run.yaml").write_text(yaml.safe_dump(WORLD_RUN, sort_keys=False))
    cwd = Path.cwd()
    os.chdir(root)  # the run records its inputs as typed: relative to the world
    try:
        assert cli("run recipes/run.yaml --model model --data data/SST-2 --out run") == 0
    finally:
        os.chdir(cwd)
    broken("run-bad-summary", "run", lambda r: (r / "02-prune" / "summary.json").write_text('{"kind": "pr'))
    broken("run-bad-stage", "run", lambda r: (r / "01-tune" / "stage.json").write_text("not json"))
    broken("run-bad-runjson", "run", lambda r: (r / "run.json").write_text("[1, 2]"))
    broken("run-list-stage", "run", lambda r: (r / "02-prune" / "stage.json").write_text("[]"))
    (root / "mine").mkdir()
    (root / "mine" / "compare.md").write_text("my own notes")

    def recipe(name: str, text: str) -> None:
        (recipes / name).write_text(text)

    recipe("method-list.yaml", "stages:\n  - name: a\n    method: [finetune]\n")
    recipe("duplicate.yaml", "stages:\n  - name: a\n    method: finetune\n    lr: 1.0e-4\n    lr: 2.0e-4\n")
    teacher = f"distill_from: {root / 'masked'}"
    recipe("teacher.yaml", f"stages:\n  - {{name: a, method: finetune, max_steps: 1, {teacher}}}\n")
    recipe("bench.yaml", "stages:\n  - {name: a, method: prune-magnitude}\n  - {name: speed, method: bench}\n")
    recipe("many.yaml", "stages:\n" + "".join(f"  - {{name: s{i}, method: evaluate}}\n" for i in range(1001)))
    bomb = "&a0 [x, x, x, x, x, x, x, x, x]"
    for level in range(1, 10):  # 9 ** 10 values once expanded
        bomb = f"&a{level} [{bomb}, " + ", ".join([f"*a{level - 1}"] * 8) + "]"
    recipe("bomb.yaml", f"stages:\n  - name: a\n    method: finetune\n    lr: {bomb}\n")
    bad_data = f"data: {root / 'own' / 'nan-label.csv'}, text_columns: text, label_column: label"
    recipe("fails.yaml", f"stages:\n  - {{name: a, method: evaluate, {bad_data}}}\n")


TRAIN = "--max-length 16 --batch-size 16"
OWN = "--text-columns text --label-column label"

CASES = [
    # data loss: --out over an input, the current folder, a root; previous results kept on failure
    ("lottery --model {w}/model --data {w}/data/SST-2 --out {w}/model --overwrite", "overlaps --model"),
    ("lottery --model {w}/model --data {w}/data/SST-2 --out . --overwrite", "current"),
    ("lottery --model {w}/model --data {w}/nowhere --out {w}/old --overwrite", "no such file or folder"),
    ("lottery --model {w}/model --data {w}/data/SST-2 --out {w}/old", "pass --overwrite"),
    ("finetune --model {w}/model --data {w}/data/SST-2 --out {w}/model/inside", "overlaps --model"),
    ("finetune --model {w}/model --data {w}/data/SST-2 --out {w}/data --overwrite", "overlaps --data"),
    ("finetune --model {w}/model --data {w}/data/SST-2 --out / --overwrite", "root"),
    ("finetune --model {w}/model --data {w}/data/SST-2 --out .. --overwrite", "contains the current folder"),
    ("finetune --model {w}/model --data {w}/data/SST-2 --out {w}/a-file/x", "is a file"),
    (
        "distill --teacher {w}/model --student {w}/masked --data {w}/data/SST-2 --out {w}/masked --overwrite",
        "overlaps --student",
    ),
    (
        "distill --teacher {w}/model --student-layers 1 --data {w}/data/SST-2 --out {w}/model --overwrite",
        "overlaps --teacher",
    ),
    ("prune magnitude --model {w}/model --out {w}/model --overwrite", "overlaps --model"),
    ("prune structured --model {w}/model --heads 0.5 --importance magnitude --out {w} --overwrite", "contains"),
    ("evaluate --model {w}/model --data {w}/data/SST-2 --json {w}/old", "is a folder"),
    ("evaluate --model {w}/model --data {w}/data/SST-2 --json {w}/a-file/r.json", "is a file"),
    ("bench --model {w}/model --json {w}/old --repeats 1", "is a folder"),
    # flags: finite and in range, named as typed
    ("finetune --model {w}/model --data {w}/data/SST-2 --out {w}/new --weight-decay nan", "--weight-decay nan"),
    ("finetune --model {w}/model --data {w}/data/SST-2 --out {w}/new --epochs inf", "--epochs inf"),
    ("finetune --model {w}/model --data {w}/data/SST-2 --out {w}/new --seed -1", "--seed -1"),
    ("finetune --model {w}/model --data {w}/data/SST-2 --out {w}/new --lr nan", "--lr nan"),
    ("finetune --model {w}/model --data {w}/data/SST-2 --out {w}/new --warmup-ratio 1", "--warmup-ratio 1"),
    (
        "finetune --model {w}/model --data {w}/data/SST-2 --out {w}/new --prune magnitude --sparsity nan",
        "--sparsity nan",
    ),
    (
        "finetune --model {w}/model --data {w}/data/SST-2 --out {w}/new --distill-from {w}/model --alpha-kd -1",
        "--alpha-kd -1",
    ),
    ("lottery --model {w}/model --data {w}/data/SST-2 --out {w}/new --tolerance nan", "--tolerance nan"),
    ("lottery --model {w}/model --data {w}/data/SST-2 --out {w}/new --prune-per-round 1", "--prune-per-round 1"),
    ("bench --model {w}/model --warmup -5", "--warmup -5"),
    (
        "distill --teacher {w}/model --student-layers 1 --data {w}/data/SST-2 --out {w}/new --temperature 0",
        "--temperature 0",
    ),
    ("prune structured --model {w}/model --ffn 1.5 --out {w}/new", "--ffn 1.5"),
    ("prune magnitude --model {w}/model --sparsity inf --out {w}/new", "--sparsity inf"),
    (
        f"finetune --model {{w}}/model --data {{w}}/data/SST-2 --out {{w}}/new {TRAIN} --prune magnitude "
        "--prune-end 999",
        "--prune-end 999",
    ),
    (
        f"finetune --model {{w}}/model --data {{w}}/data/SST-2 --out {{w}}/new {TRAIN} --lr 1e30 --epochs 4",
        "Nothing was saved",
    ),
    # LoRA and merge
    ("finetune --model {w}/model --data {w}/data/SST-2 --out {w}/new --lora --lora-r 0", "--lora-r 0"),
    ("finetune --model {w}/model --data {w}/data/SST-2 --out {w}/new --lora --lora-dropout 1", "--lora-dropout 1"),
    ("finetune --model {w}/model --data {w}/data/SST-2 --out {w}/new --lora --lora-targets (", "not a regular"),
    ("finetune --model {w}/model --data {w}/data/SST-2 --out {w}/new --lora --lora-targets nothing", "matches no"),
    (
        "finetune --model {w}/model --data {w}/data/SST-2 --out {w}/new --lora --prune magnitude",
        "--prune magnitude with --lora",
    ),
    ("merge --model {w}/model --adapter {w}/nope --out {w}/new", "--adapter"),
    ("merge --model {w}/model --adapter {w}/model --out {w}/new", "no adapter_config.json"),
    ("merge --model {w}/model --adapter {w}/old --out {w}/old --overwrite", "overlaps --adapter"),
    ("merge --model {w}/model --adapter {w}/old --out {w}/model --overwrite", "overlaps --model"),
    # adaptive structured pruning
    ("finetune --model {w}/model --data {w}/data/SST-2 --out {w}/new --prune adaptive", "pass --heads, --ffn"),
    ("finetune --model {w}/model --data {w}/data/SST-2 --out {w}/new --prune adaptive --heads 0", "--heads 0"),
    (
        "finetune --model {w}/model --data {w}/data/SST-2 --out {w}/new --prune adaptive --ffn 0.5 --scope row",
        "--scope row",
    ),
    (
        "finetune --model {w}/masked --data {w}/data/SST-2 --out {w}/new --prune adaptive --ffn 0.5",
        "unstructured masks",
    ),
    (
        "finetune --model {w}/model --data {w}/data/SST-2 --out {w}/new --prune adaptive --ffn 0.5 --score-ema 1",
        "--score-ema 1",
    ),
    # the workflow commands
    ("compress --model {w}/model --data {w}/data/SST-2 --out {w}/model/x --heads 0.5", "overlaps --model"),
    ("compress --model {w}/model --data {w}/data/SST-2 --out {w}/old --heads 0.5", "pass --overwrite"),
    ("compress --model {w}/model --data {w}/data/SST-2 --out {w}/new", "pass a target"),
    ("compress --model {w}/model --data {w}/data/SST-2 --out {w}/new --speedup 2 --ffn 0.5", "--speedup sets"),
    ("compress --model {w}/model --data {w}/data/SST-2 --out {w}/new --speedup inf", "--speedup inf"),
    ("compress --model {w}/model --data {w}/nowhere --out {w}/new --heads 0.5", "no such file or folder"),
    ("study ordering --model {w}/model --data {w}/data/SST-2 --out {w}/new --heads 0.5 --seeds 1 1", "each seed"),
    ("study ordering --model {w}/model --data {w}/data/SST-2 --out {w}/data --heads 0.5 --overwrite", "overlaps"),
    ("study ordering --model {w}/model --data {w}/data/SST-2 --out {w}/new --heads 0.5 --orders none", "--orders"),
    ("compress --model {w}/model --data {w}/data/SST-2 --out {w}/new --sparsity 0.5 --heads 0.5", "pass one kind"),
    ("compress --model {w}/model --data {w}/data/SST-2 --out {w}/new --sparsity 1", "--sparsity 1"),
    ("compress --model {w}/model --data {w}/data/SST-2 --out {w}/new --flops-budget 0", "--flops-budget 0"),
    (
        "compress --model {w}/model --data {w}/data/SST-2 --out {w}/new --sparsity 0.5 --latency-aware",
        "not for an unstructured --sparsity",
    ),
    (
        "compress --model {w}/model --data {w}/data/SST-2 --out {w}/new --flops-budget 0.5 --params-budget 1M",
        "pass one budget",
    ),
    # budgets and calibration draws
    ("prune structured --model {w}/model --data {w}/data/SST-2 --out {w}/new --flops-budget 2", "--flops-budget 2"),
    ("prune structured --model {w}/model --data {w}/data/SST-2 --out {w}/new --layers 1 --latency-aware", "allocates"),
    (
        "prune structured --model {w}/model --data {w}/data/SST-2 --out {w}/new --ffn 0.5 --calibration-seed -1",
        "--calibration-seed -1",
    ),
    (
        "finetune --model {w}/model --data {w}/data/SST-2 --out {w}/new --prune adaptive --flops-budget 0.5 "
        "--params-budget 10k",
        "pass one budget",
    ),
    # data that would be misread
    (
        f"evaluate --model {{w}}/model --data {{w}}/own/nan-label.csv {OWN}",
        "nan-label.csv:3: label 'nan' is not a finite number",
    ),
    (f"evaluate --model {{w}}/model --data {{w}}/own/empty-label.csv {OWN}", "empty-label.csv:3: empty label"),
    (f"evaluate --model {{w}}/model --data {{w}}/own/extra-field.csv {OWN}", "extra-field.csv:3: 3 fields"),
    (
        f"evaluate --model {{w}}/model --data {{w}}/own/stray-quotes.csv {OWN}",
        "stray-quotes.csv:3: a quoted field runs on",
    ),
    (f"evaluate --model {{w}}/model --data {{w}}/own/latin1.csv {OWN}", "latin1.csv:2: not valid utf-8"),
    (f"evaluate --model {{w}}/model --data {{w}}/own/inf-label.jsonl {OWN}", "inf-label.jsonl:2: label 'inf'"),
    (f"evaluate --model {{w}}/model --data {{w}}/own/latin1.csv {OWN} --encoding klingon", "--encoding klingon"),
    ("evaluate --model {w}/model --data {w}/glue-bad/SST-2", "dev.tsv:3: 3 fields"),
    # broken model files and impossible lengths
    ("evaluate --model {w}/truncated --data {w}/data/SST-2", "model.safetensors"),
    ("evaluate --model {w}/truncated-sparse --data {w}/data/SST-2", "model.sparse.safetensors"),
    ("evaluate --model {w}/sparse-missing-tensor --data {w}/data/SST-2", "missing tensors ['classifier.bias']"),
    ("prune magnitude --model {w}/corrupt-masks --out {w}/new", "prunekit_masks.safetensors: cannot read"),
    ("finetune --model {w}/bad-mask-shape --data {w}/data/SST-2 --out {w}/new", "has shape (3, 5)"),
    ("evaluate --model {w}/bad-pickle --data {w}/data/SST-2", "pytorch_model.bin"),
    ("evaluate --model {w}/model --data {w}/data/SST-2 --max-length 4096", "--max-length 4096: the model"),
    ("finetune --model {w}/model --data {w}/data/SST-2 --out {w}/new --max-length 4096", "takes at most 128 tokens"),
    ("bench --model {w}/model --seq-len 4096", "--seq-len 4096"),
    ("evaluate --model runs/nope --data {w}/data/SST-2", "--model runs/nope: no such folder"),
    ("evaluate --model nope/model --data {w}/data/SST-2", "no such folder"),
    ("distill --teacher {w}/model --student {w}/nope --data {w}/data/SST-2 --out {w}/new", "--student"),
    ("distill --teacher {w}/nope --student-layers 1 --data {w}/data/SST-2 --out {w}/new", "--teacher"),
    # ---- round two (#25); the number is the issue's
    # 2. --json over an input
    ("evaluate --model {w}/model --data {w}/data/SST-2 --json {w}/data/SST-2/train.tsv", "inside --data"),
    ("evaluate --model {w}/model --data {w}/data/SST-2 --json {w}/model/model.safetensors", "inside --model"),
    ("export onnx --model {w}/model --out {w}/new.onnx --json {w}/model/config.json", "inside --model"),
    ("export onnx --model {w}/model --out {w}/new.onnx --json {w}/new.onnx", "inside --out"),
    ("bench --model {w}/model --vs {w}/masked --json {w}/masked/summary.json --repeats 1", "inside --vs"),
    # 3. compare into a folder of the user's
    ("compare {w}/run {w}/run --out {w}/mine", "pass --overwrite"),
    # 4. --out inside a folder the recipe names
    ("run {w}/recipes/teacher.yaml --model {w}/model --data {w}/data/SST-2 --out {w}/masked/myrun", "distill_from"),
    # 5. strict loading: nothing random without a word
    ("evaluate --model {w}/missing-query --data {w}/data/SST-2", "lacks tensor(s) bert.encoder.layer.0.attention"),
    ("evaluate --model {w}/missing-head --data {w}/data/SST-2", "lacks tensor(s) classifier.weight"),
    ("finetune --model {w}/missing-query --data {w}/data/SST-2 --out {w}/new", "lacks tensor(s) bert.encoder"),
    ("export onnx --model {w}/missing-head --out {w}/new.onnx", "lacks tensor(s) classifier.weight"),
    ("evaluate --model {w}/extra-tensor --data {w}/data/SST-2", "holds tensor(s) the model does not have: extra"),
    ("evaluate --model {w}/base --data {w}/data/SST-2", "has no trained head for this task"),
    # 6. non-finite weights or logits
    ("evaluate --model {w}/nan-weight --data {w}/data/SST-2", "has 1 non-finite value(s)"),
    ("export onnx --model {w}/nan-weight --out {w}/new.onnx", "has 1 non-finite value(s)"),
    ("evaluate --model {w}/overflow --data {w}/data/SST-2", "non-finite logits"),
    ("export onnx --model {w}/overflow --out {w}/new.onnx --seq-len 8 --repeats 1", "was removed"),
    # 7 and 14. opsets the exporter does not write as asked
    ("export onnx --model {w}/model --out {w}/new.onnx --opset 7", "--opset 7: expected an integer from 17 to 25"),
    ("export onnx --model {w}/model --out {w}/new.onnx --opset 99", "--opset 99: expected an integer from 17"),
    # 10. recipe values of the wrong type
    ("run {w}/recipes/method-list.yaml --model {w}/model --out {w}/new", "stages[0].method: expected one of"),
    ("run {w}/recipes/run.yaml --model {w}/model --out {w}/new --set stages[0].method=[x]", "stages[0].method"),
    # 11. damaged run records
    ("report {w}/run-bad-summary", "02-prune/summary.json (stage 02-prune's result): not valid JSON"),
    ("report {w}/run-bad-stage", "01-tune/stage.json (a finished stage's record): not valid JSON"),
    ("report {w}/run-bad-runjson", "run.json (the run's inputs): expected a JSON object"),
    ("report {w}/run-list-stage", "02-prune/stage.json (a finished stage's record): expected a JSON object"),
    ("compare {w}/run {w}/run-bad-summary --out {w}/new", "not valid JSON"),
    (
        "run {w}/recipes/run.yaml --model {w}/model --data {w}/data/SST-2 --out {w}/run-bad-stage --resume",
        "01-tune/stage.json (a finished stage's record; delete its folder to run the stage again): not valid JSON",
    ),
    (
        "run {w}/recipes/run.yaml --model {w}/model --data {w}/data/SST-2 --out {w}/run-bad-runjson --resume",
        "expected a JSON object",
    ),
    # 12. a timing shape the model cannot take, known before any training
    ("compress --model {w}/short --data {w}/data/SST-2 --out {w}/new --heads 0.5", "takes at most 64 tokens, and"),
    ("run {w}/recipes/bench.yaml --model {w}/short --out {w}/new", "stages[1].seq_len 128: the model"),
    # 13. one class
    (f"finetune --model {{w}}/model --data {{w}}/own/one-class.csv {OWN} --out {{w}}/new", "needs at least two"),
    # 15 and 16. recipes that would hang
    ("run {w}/recipes/bomb.yaml --model {w}/model --out {w}/new", "more than 100,000 values"),
    ("run {w}/recipes/many.yaml --model {w}/model --out {w}/new", "a recipe may have at most 1,000"),
    # the minor ones
    ("run {w}/recipes/duplicate.yaml --model {w}/model --out {w}/new", "line 5: duplicate key 'lr'"),
    ("run {w}/recipes --model {w}/model --out {w}/new", "is a folder; expected a YAML file"),
    (
        "study ordering --model {w}/model --data {w}/data/SST-2 --out {w}/new --heads 0.5 --orders joint joint",
        "each order once",
    ),
    ("export onnx --model {w}/model --out /proc/new.onnx", "cannot write in /proc"),
]


@pytest.mark.parametrize("command, message", CASES, ids=[f"{i}-{m[:40]}" for i, (_, m) in enumerate(CASES)])
def test_hostile_input_exits_2_with_one_line_and_loses_nothing(command, message, world, monkeypatch, capsys):
    monkeypatch.chdir(world / "cwd")
    before = tree_digest(world)
    code = main(command.format(w=world).split())
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err, err
    (line,) = [line for line in err.splitlines() if "error:" in line]  # other lines: the progress bar, if any
    assert line.startswith("prunekit ") and message in line, err
    assert tree_digest(world) == before


def test_unreadable_folder_is_refused_before_work(world, tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("root can write into read-only folders")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    code = main(f"finetune --model {world}/model --data {world}/data/SST-2 --out {locked}/x".split())
    assert code == 2 and "permission denied" in capsys.readouterr().err


def test_skip_bad_rows_counts_and_trains(world, tmp_path, caplog):
    folder = tmp_path / "SST-2"
    folder.mkdir()
    shutil.copy(world / "glue-bad" / "SST-2" / "train.tsv", folder / "train.tsv")
    (folder / "dev.tsv").write_text("sentence\tlabel\ngood\t1\nbad\t0\n")
    assert cli(f"finetune --model {world}/model --data {folder} --out {tmp_path}/ft {TRAIN} --skip-bad-rows") == 0
    assert "skipped 1 malformed row(s)" in caplog.text
    assert json.loads((tmp_path / "ft" / "summary.json").read_text())["train"]["samples"] == 2


def test_latin1_reads_with_encoding_flag(world, tmp_path):
    out = tmp_path / "e.json"
    assert (
        cli(f"evaluate --model {world}/model --data {world}/own/latin1.csv {OWN} --encoding latin-1 --json {out}") == 0
    )
    assert json.loads(out.read_text())["eval_samples"] == 2


# ---------------------------------------------------------------- crash safety


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_a_swap_killed_between_renames_is_recovered_even_if_the_next_run_fails(world, tmp_path, capsys):
    """A crash between the two renames leaves only ``.X.old-PID``: the next command puts it back."""
    out = tmp_path / "result"
    shutil.copytree(world / "masked", out)
    before = tree_digest(out)
    out.rename(tmp_path / f".result.old-{_dead_pid()}")
    stale_tmp = tmp_path / f".result.tmp-{_dead_pid()}-abc"
    stale_tmp.mkdir()
    # fails (wanda needs data), but only after recovering the previous result
    assert main(f"prune magnitude --model {world}/model --importance wanda --out {out} --overwrite".split()) == 2
    assert tree_digest(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result"]
    assert "recovered" in capsys.readouterr().out


def _launch(args: list[str], tmpdir: Path) -> subprocess.Popen:
    env = {**os.environ, "TMPDIR": str(tmpdir), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "prunekit", *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def _kill_when(process: subprocess.Popen, ready, timeout: float = 120.0, poll: float = 0.001) -> bool:
    """SIGKILL ``process`` as soon as ``ready()``; False if it ended first."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if ready():
            process.kill()
            process.wait()
            return True
        time.sleep(poll)
    process.wait()
    return False


def _siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}."))


@pytest.mark.slow
def test_sigkill_mid_training_keeps_the_old_result_and_the_rerun_cleans_up(world, tmp_path):
    out, tmpdir = tmp_path / "result", tmp_path / "tmpdir"
    tmpdir.mkdir()
    shutil.copytree(world / "old", out)
    before = tree_digest(out)
    args = ["finetune", "--model", str(world / "model"), "--data", str(world / "data" / "SST-2"), "--out", str(out)]
    args += ["--overwrite", *TRAIN.split()]
    process = _launch([*args, "--epochs", "500"], tmpdir)
    assert _kill_when(process, lambda: any(tmpdir.glob("prunekit-work-*")), poll=0.05)
    assert tree_digest(out) == before and _siblings(out) == []
    assert any(tmpdir.glob("prunekit-work-*"))  # SIGKILL leaves the scratch folder...
    rerun = _launch(args, tmpdir)
    assert rerun.wait(timeout=300) == 0
    assert not any(tmpdir.glob("prunekit-work-*"))  # ...which the next run removes
    assert (out / "summary.json").is_file() and _siblings(out) == []


@pytest.mark.slow
def test_sigkill_mid_save_then_rerun_succeeds_without_stray_siblings(world, tmp_path):
    out, tmpdir = tmp_path / "result", tmp_path / "tmpdir"
    tmpdir.mkdir()
    args = ["prune", "magnitude", "--model", str(world / "model"), "--out", str(out), "--overwrite"]
    killed_while_saving = False
    for _ in range(5):  # the save takes milliseconds: try until the kill lands inside it
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(world / "old", out)
        process = _launch(args, tmpdir)
        if _kill_when(process, lambda: bool(_siblings(out))):
            killed_while_saving = True
            break
    assert killed_while_saving
    assert _siblings(out)  # the half-written folder is still there ...
    assert out.is_dir() or any(s.startswith(".result.old-") for s in _siblings(out))  # ... and the old result
    rerun = _launch(args, tmpdir)
    assert rerun.wait(timeout=300) == 0
    assert _siblings(out) == [] and json.loads((out / "summary.json").read_text())["kind"] == "prune"


@pytest.mark.slow
def test_sigkill_mid_lottery_keeps_out_and_resume_finishes(world, tmp_path):
    out, tmpdir = tmp_path / "lottery", tmp_path / "tmpdir"
    tmpdir.mkdir()
    shutil.copytree(world / "old", out)
    before = tree_digest(out)
    args = ["lottery", "--model", str(world / "model"), "--data", str(world / "data" / "SST-2"), "--out", str(out)]
    args += ["--rounds", "2", "--steps-per-round", "2", "--no-controls", "--max-length", "16", "--overwrite"]
    staging = tmp_path / ".lottery.partial"
    process = _launch(args, tmpdir)
    assert _kill_when(process, lambda: (staging / "round-0" / "metrics.json").is_file(), poll=0.01)
    assert tree_digest(out) == before  # the old --out is untouched until the run is complete
    assert main([*args, "--resume"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [0, 1, 2]
    assert not staging.exists() and _siblings(out) == []


@pytest.mark.slow
def test_sigterm_mid_training_exits_cleanly_and_removes_scratch(world, tmp_path):
    import signal
    import time

    out, tmpdir = tmp_path / "result", tmp_path / "tmpdir"
    tmpdir.mkdir()
    shutil.copytree(world / "old", out)
    before = tree_digest(out)
    args = ["finetune", "--model", str(world / "model"), "--data", str(world / "data" / "SST-2"), "--out", str(out)]
    process = _launch([*args, "--overwrite", *TRAIN.split(), "--epochs", "500"], tmpdir)
    deadline = time.monotonic() + 120
    while not any(tmpdir.glob("prunekit-work-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 130
    assert not any(tmpdir.glob("prunekit-work-*"))  # removed on the way out, not left for the next run
    assert tree_digest(out) == before and _siblings(out) == []


def test_saved_model_files_are_readable_like_the_rest_of_the_folder(world):
    umask = os.umask(0)
    os.umask(umask)
    expected = 0o666 & ~umask
    assert all((path.stat().st_mode & 0o777) == expected for path in (world / "masked").iterdir())


# ---------------------------------------------------------------- round two (#25): runs, loading, outputs


def _run(world: Path, out: Path, *extra: str) -> int:
    inputs = f"--model {world}/model --data {world}/data/SST-2"
    return cli(f"run {world}/recipes/run.yaml {inputs} --out {out} " + " ".join(extra))


def test_a_failed_overwrite_keeps_the_old_run_and_a_finished_one_replaces_it(world, tmp_path, capsys):
    """#1: the new run is built beside the old one and swapped in only when complete."""
    out = shutil.copytree(world / "run", tmp_path / "run")
    before = tree_digest(out)
    failing = f"run {world}/recipes/fails.yaml --model {world}/model --data {world}/data/SST-2 --out {out} --overwrite"
    assert cli(failing) == 2
    assert "stage 01-a stopped" in capsys.readouterr().err
    assert tree_digest(out) == before  # models, records and report of the old run, byte for byte
    assert (tmp_path / ".run.partial" / "run.json").is_file()  # the stopped new run, kept for --resume
    assert _run(world, out) == 2 and "an unfinished --overwrite run" in capsys.readouterr().err
    assert _run(world, out, "--overwrite") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert (out / "report.md").is_file() and (out / "03-check" / "stage.json").is_file()


def test_a_copied_run_resumes_from_its_own_stages_from_any_folder(world, tmp_path, monkeypatch):
    """#8: stage.json names the run's models relative to the run folder; the copy's later stage is made
    from the copy's own earlier stage, and --resume works from another working folder."""
    copy = shutil.copytree(world / "run", tmp_path / "copy")
    shutil.rmtree(copy / "02-prune")
    shutil.rmtree(copy / "03-check")
    original = tree_digest(world / "run")
    monkeypatch.chdir(world)  # where the original run was made, with relative paths
    assert _run(world, copy, "--resume") == 0
    record = json.loads((copy / "02-prune" / "stage.json").read_text())
    assert record["input"] == "01-tune" and record["model"] == "02-prune"
    assert record["argv"][record["argv"].index("--model") + 1] == str(copy / "01-tune")
    assert tree_digest(world / "run") == original
    moved = copy.rename(tmp_path / "moved")
    shutil.rmtree(moved / "03-check")
    monkeypatch.chdir(tmp_path)  # and from elsewhere, with the inputs spelled another way
    assert _run(world, moved, "--resume") == 0
    check = json.loads((moved / "03-check" / "stage.json").read_text())
    assert check["argv"][check["argv"].index("--model") + 1] == str(moved / "02-prune")


def test_an_incomplete_stage_folder_is_run_again(world, tmp_path, capsys):
    """#9: a stage folder with a summary but no stage.json and no weights is not taken as finished."""
    run = shutil.copytree(world / "run", tmp_path / "run")
    (run / "02-prune" / "stage.json").unlink()
    (run / "02-prune" / "model.safetensors").unlink()
    assert _run(world, run, "--resume") == 0
    assert "02-prune: its folder is incomplete" in capsys.readouterr().out
    assert (run / "02-prune" / "model.safetensors").is_file() and (run / "02-prune" / "stage.json").is_file()
    assert _run(world, run, "--resume") == 0  # and every later --resume keeps it


def test_a_new_head_on_a_base_model_is_said(world, tmp_path, caplog):
    """#5: the one expected exception to strict loading — a base model gets a new task head — is said."""
    train = f"--data {world}/data/SST-2 --out {tmp_path}/ft {TRAIN} --max-steps 1"
    assert cli(f"finetune --model {world}/base {train}") == 0
    assert "the task head (classifier.bias, classifier.weight) is new" in caplog.text
    caplog.clear()
    assert cli(f"evaluate --model {tmp_path}/ft --data {world}/data/SST-2 --max-length 16") == 0
    assert "task head" not in caplog.text  # its own trained head: nothing new


def test_a_default_length_that_plays_no_part_fails_nothing(world, tmp_path):
    """Minor: pruning without data must not refuse the default --max-length for a 64-position model."""
    assert cli(f"prune magnitude --model {world}/short --sparsity 0.5 --out {tmp_path}/p") == 0


def test_compare_replaces_a_folder_only_with_overwrite_and_writes_shareable_files(world, tmp_path):
    """#3 and the 0600 plot: --overwrite replaces the folder whole; every output is readable like the rest."""
    mine = shutil.copytree(world / "mine", tmp_path / "mine")
    assert cli(f"compare {world}/run {world}/run --out {mine} --overwrite") == 0
    assert not (mine / "compare.md").read_text().startswith("my own")
    umask = os.umask(0)
    os.umask(umask)
    modes = {path.name: path.stat().st_mode & 0o777 for path in mine.iterdir()}
    assert modes and set(modes.values()) == {0o666 & ~umask}, modes


def test_report_shows_a_recorded_path_literally(world, tmp_path):
    """Minor: a recipe path with Markdown in it cannot become a heading or markup in report.md."""
    run = shutil.copytree(world / "run", tmp_path / "run")
    record = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**record, "recipe": "x\n# not a heading `y`", "model": "*m*"}))
    assert cli(f"report {run}") == 0
    lines = (run / "report.md").read_text().splitlines()
    assert lines[0] == "# prunekit run: `` x # not a heading `y` ``"
    assert not any(line.startswith("# not") for line in lines) and "``*m*``" not in lines[2]
    assert lines[2].startswith("Model `*m*`")


def test_a_closed_pipe_ends_quietly():
    """Minor: `prunekit recipes --options finetune | head` — the reader leaving is not an error."""
    process = subprocess.Popen(
        [sys.executable, "-m", "prunekit", "recipes", "--options", "finetune"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    process.stdout.read(10)
    process.stdout.close()
    assert process.wait(timeout=120) == 141 and process.stderr.read() == b""


def test_the_python_loader_is_strict_too(world):
    """#5 from Python: ``prunekit.load_pruned`` refuses what the commands refuse."""
    from prunekit import load_pruned
    from prunekit.errors import ModelError

    with pytest.raises(ModelError, match="lacks tensor"):
        load_pruned(world / "missing-query")
    with pytest.raises(ModelError, match="does not have: extra"):
        load_pruned(world / "extra-tensor")
    assert load_pruned(world / "model").num_labels == 2
