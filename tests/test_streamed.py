"""Layer-streamed one-shot pruning (``prune magnitude --stream``): the same bytes as the resident pass,
resumable after a kill, and bounded memory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, LlamaConfig

from prunekit.pruning.masks import MaskSet
from tests.conftest import cli
from tests.tiny import tiny_tokenizer

REPO = Path(__file__).resolve().parents[1]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a model folder's safetensors weights (single file or shards; masks aside)."""
    tensors = {}
    for path in sorted(folder.glob("model*.safetensors")):
        tensors.update(load_file(path))
    return tensors


def shard_bytes(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.glob("model-*.safetensors"))}


@pytest.mark.parametrize(
    "flags",
    [
        "--importance sparsegpt",
        "--importance sparsegpt --pattern 2:4",
        "--importance sparsegpt --fit-to pruned",
        "--importance wanda",
        "--importance wanda --scope layer --layer-sparsity owl --sparsity 0.6",
        "--scope layer --sparsity 0.7",  # magnitude: no data read
    ],
)
def test_streamed_pruning_equals_the_resident_pass_bit_for_bit(flags, tiny_llama_lm, text_dir, tmp_path):
    resident, streamed = tmp_path / "resident", tmp_path / "streamed"
    assert cli(f"prune magnitude --model {tiny_llama_lm} --data {text_dir} {flags} --out {resident}") == 0
    assert cli(f"prune magnitude --model {tiny_llama_lm} --data {text_dir} {flags} --stream --out {streamed}") == 0
    assert len(list(streamed.glob("model-*-of-*.safetensors"))) > 2  # sharded: a shard per layer
    dense, sharded = weights(resident), weights(streamed)
    assert dense.keys() == sharded.keys()
    assert all(torch.equal(dense[name], sharded[name]) for name in dense)
    masks, streamed_masks = MaskSet.load(resident).masks, MaskSet.load(streamed).masks
    assert masks.keys() == streamed_masks.keys() and all(torch.equal(masks[n], streamed_masks[n]) for n in masks)
    a, b = (json.loads((folder / "summary.json").read_text()) for folder in (resident, streamed))
    for key in ("sparsity", "sparsity_per_module", "owl", "params_total", "params_nonzero", "calibration"):
        assert a.get(key) == b.get(key), key
    assert b["streamed"] is True and b["peak_rss_mb"] > 0 and "metrics" not in b  # not evaluated
    # the shards load as a normal Hugging Face folder
    loaded = AutoModelForCausalLM.from_pretrained(streamed)
    assert torch.equal(loaded.state_dict()["model.layers.0.mlp.down_proj.weight"],
                       dense["model.layers.0.mlp.down_proj.weight"])  # fmt: skip
    assert not any(name.startswith((".", "prunekit-stream")) for name in os.listdir(streamed))


def test_streamed_pruning_keeps_the_stored_dtype_and_exact_sparsity(tiny_llama_lm, text_dir, tmp_path):
    stored = tmp_path / "bf16"
    AutoModelForCausalLM.from_pretrained(tiny_llama_lm, dtype=torch.bfloat16).save_pretrained(stored)
    tiny_tokenizer().save_pretrained(stored)
    out, resident = tmp_path / "out", tmp_path / "resident"
    assert cli(f"prune magnitude --model {stored} --data {text_dir} --importance sparsegpt --stream --out {out}") == 0
    assert cli(f"prune magnitude --model {stored} --data {text_dir} --importance sparsegpt --save-dtype bfloat16 "
               f"--out {resident}") == 0  # fmt: skip
    pruned, dense = weights(out), weights(resident)
    assert {tensor.dtype for tensor in pruned.values()} == {torch.bfloat16}
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    assert all(torch.equal(pruned[name], dense[name]) for name in dense)
    for name in MaskSet.load(out).masks:
        assert (pruned[name] == 0).float().mean().item() == pytest.approx(0.5, abs=1 / pruned[name].shape[1])


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    import prunekit.methods.streamed as streamed
    from prunekit.cli import main

    real, calls = streamed.prune_and_advance, []

    def prune_and_advance(*args, **kwargs):
        calls.append(1)
        if len(calls) == int(os.environ["KILL_AT_LAYER"]):
            os.kill(os.getpid(), signal.SIGKILL)  # mid-run: nothing of this layer is finished
        return real(*args, **kwargs)

    streamed.prune_and_advance = prune_and_advance
    sys.exit(main(sys.argv[1:]))
    """
)


def test_a_streamed_run_killed_mid_layer_resumes_to_identical_shards(tiny_llama_lm, text_dir, tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    command = f"prune magnitude --model {tiny_llama_lm} --data {text_dir} --importance sparsegpt --stream".split()
    assert cli(" ".join([*command, "--out", str(whole)])) == 0
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    env = {**os.environ, "KILL_AT_LAYER": "2", "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, str(script), *command, "--out", str(killed)], env=env, capture_output=True)
    assert run.returncode == -9
    assert not killed.exists() and (tmp_path / ".killed.partial").is_dir()
    assert cli(" ".join([*command, "--out", str(killed)])) == 2  # an unfinished run is not discarded silently
    assert cli(" ".join([*command, "--out", str(killed), "--resume"])) == 0
    assert shard_bytes(killed) == shard_bytes(whole)
    masks, resumed = MaskSet.load(whole).masks, MaskSet.load(killed).masks  # (its header's key order varies)
    assert masks.keys() == resumed.keys() and all(torch.equal(masks[name], resumed[name]) for name in masks)
    assert not (tmp_path / ".killed.partial").exists()


MEASURE = textwrap.dedent(
    """
    import json, sys
    from prunekit.cli import main

    code = main(sys.argv[1:])
    # VmHWM, not ru_maxrss: Linux carries a parent's high-water mark into ru_maxrss across exec
    status = open("/proc/self/status").read().split("VmHWM:")[1].split()[0]
    print(json.dumps({"code": code, "peak_mb": int(status) / 1024}))
    """
)


@pytest.mark.slow
def test_a_streamed_pass_holds_one_layer_whatever_the_depth(text_dir, tmp_path):
    script = tmp_path / "measure.py"
    script.write_text(MEASURE)

    def peak(layers: int, extra: str) -> float:
        """Peak RSS of a child process pruning a random 512-wide Llama of ``layers`` layers."""
        folder = tmp_path / f"model-{layers}"
        if not folder.exists():
            config = LlamaConfig(vocab_size=len(tiny_tokenizer().vocab), hidden_size=512, intermediate_size=2048,
                                 num_hidden_layers=layers, num_attention_heads=8, num_key_value_heads=2,
                                 pad_token_id=0)  # fmt: skip
            AutoModelForCausalLM.from_config(config).save_pretrained(folder)
            tiny_tokenizer().save_pretrained(folder)
        command = (f"prune magnitude --model {folder} --data {text_dir} --importance sparsegpt --calibration-samples 4 "
                   f"--calibration-length 64 {extra} --out {tmp_path / f'out-{layers}{extra}'}").split()  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        run = subprocess.run([sys.executable, str(script), *command], env=env, capture_output=True, text=True)
        result = json.loads(run.stdout.strip().splitlines()[-1])
        assert result["code"] == 0, run.stderr[-2000:]
        return result["peak_mb"]

    layer_mb = 4.5e6 * 4 / 2**20  # one layer's float32 weights: q, o 512², k, v 512 x 128, three 512 x 2048
    resident = peak(16, "") - peak(4, "")
    streamed = peak(16, "--stream") - peak(4, "--stream")
    assert resident > 0.75 * 12 * layer_mb  # the measurement sees the 12 more layers a resident pass holds
    assert streamed < 0.25 * 12 * layer_mb, (streamed, resident)  # within noise of the 4-layer run


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ("--stream", "--scope global ranks every layer's weights at once"),
        ("--importance sparsegpt --stream --save-format sparse", "--stream writes the dense format"),
        ("--importance sparsegpt --resume", "--resume: only a --stream run"),
    ],
)
def test_streamed_mistakes_get_one_line_errors(flags, message, tiny_llama_lm, text_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli(f"prune magnitude --model {tiny_llama_lm} --data {text_dir} {flags} --out {out}") == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_streaming_needs_safetensors_weights(tiny_llama_lm, text_dir, tmp_path, capsys):
    folder = tmp_path / "bin"
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_lm)
    model.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")  # the older format, which transformers still reads
    (folder / "model.safetensors").unlink()
    tiny_tokenizer().save_pretrained(folder)
    out = tmp_path / "out"
    assert cli(f"prune magnitude --model {folder} --data {text_dir} --importance wanda --stream --out {out}") == 2
    assert "reading layer by layer needs safetensors weights" in capsys.readouterr().err


def test_shards_name_the_tensors_of_each_layer(tiny_llama_lm, text_dir, tmp_path):
    out, lm = tmp_path / "out", tiny_llama_lm
    assert cli(f"prune magnitude --model {lm} --data {text_dir} --importance wanda --stream --out {out}") == 0
    index = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
    by_shard: dict[str, set[str]] = {}
    for name, shard in index.items():
        by_shard.setdefault(shard, set()).add(name.split(".layers.")[1].split(".")[0] if ".layers." in name else name)
    assert all(len(names) == 1 for names in by_shard.values())  # one layer (or one outside tensor) per shard
    for shard in by_shard:
        with safe_open(str(out / shard), framework="pt") as handle:
            assert {n for n, s in index.items() if s == shard} == set(handle.keys())


def test_the_api_streams_a_folder_and_refuses_an_in_memory_model(tiny_llama_lm, text_dir, tmp_path):
    import prunekit
    from prunekit.errors import ConfigError

    summary = prunekit.prune_streamed(tiny_llama_lm, tmp_path / "out", data=text_dir, importance="wanda")
    assert summary["streamed"] is True and summary["sparsity"] == pytest.approx(0.5)
    assert summary == json.loads((tmp_path / "out" / "summary.json").read_text())
    with pytest.raises(ConfigError, match="folder exists and is not empty"):
        prunekit.prune_streamed(tiny_llama_lm, tmp_path / "out", data=text_dir, importance="wanda")
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_lm)
    with pytest.raises(ConfigError, match=r"prunekit\.prune_streamed"):
        prunekit.prune_magnitude(model, data=text_dir, importance="wanda", stream=True)


def test_a_recipe_resumes_a_killed_streamed_stage(tiny_llama_lm, text_dir, tmp_path):
    recipe, out = tmp_path / "r.yaml", tmp_path / "run"
    recipe.write_text("stages:\n  - {name: sparse, method: prune-magnitude, importance: wanda, stream: true}\n")
    command = f"run {recipe} --model {tiny_llama_lm} --data {text_dir} --out {out}"
    assert cli(command) == 0
    expected = shard_bytes(out / "01-sparse")
    shutil.rmtree(out / "01-sparse")  # as if killed mid-stage: its progress kept beside the stage's folder
    (out / ".01-sparse.partial").mkdir()
    assert cli(f"{command} --resume") == 0
    assert shard_bytes(out / "01-sparse") == expected and not (out / ".01-sparse.partial").exists()


def test_streaming_a_pruned_model_only_prunes_more_and_keeps_its_other_masks(tiny_llama_lm, text_dir, tmp_path):
    pruned = tmp_path / "pruned"
    assert cli(f"prune magnitude --model {tiny_llama_lm} --scope layer --sparsity 0.3 --out {pruned}") == 0
    flags = f"--data {text_dir} --importance sparsegpt --exclude down_proj"  # down_proj's masks are carried over
    assert cli(f"prune magnitude --model {pruned} {flags} --out {tmp_path / 'resident'}") == 0
    assert cli(f"prune magnitude --model {pruned} {flags} --stream --out {tmp_path / 'streamed'}") == 0
    first, resident, streamed = (MaskSet.load(tmp_path / name).masks for name in ("pruned", "resident", "streamed"))
    assert resident.keys() == streamed.keys() == first.keys()
    assert all(torch.equal(resident[name], streamed[name]) for name in resident)
    assert all(not (streamed[name] & ~first[name]).any() for name in first)  # nothing pruned before comes back
    dense, sharded = weights(tmp_path / "resident"), weights(tmp_path / "streamed")
    assert all(torch.equal(dense[name], sharded[name]) for name in dense)
