"""Device and precision: bfloat16 on the CPU against float32 (each within a stated tolerance), the
records a summary keeps, the saved dtype, and the same checks on a GPU where one is present."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from prunekit.errors import ConfigError
from tests.conftest import cli

CUDA = torch.cuda.is_available()


def _summary(folder) -> dict:
    return json.loads((folder / "summary.json").read_text())


def _stored_dtypes(folder) -> set[str]:
    with safe_open(str(folder / "model.safetensors"), "pt") as tensors:
        return {str(tensors.get_slice(name).get_dtype()) for name in tensors.keys()}


def _agreement(a, b) -> float:
    """Fraction of weights both runs keep or both prune."""
    from prunekit.pruning.masks import MaskSet

    left, right = MaskSet.load(a, None).masks, MaskSet.load(b, None).masks
    same = sum(int((left[name] == right[name]).sum()) for name in left)
    return same / sum(mask.numel() for mask in left.values())


@pytest.mark.parametrize("importance", ["sparsegpt", "wanda"])
def test_one_shot_pruning_in_bfloat16_on_the_cpu_matches_float32(importance, tiny_llama_lm, text_dir, tmp_path):
    """bfloat16 weights, float32 statistics: >= 95 % of the mask decisions and the perplexity within 5 %
    of the float32 run; the summary says bfloat16, and the weights are saved as it worked (bfloat16)."""
    base = f"prune magnitude --model {tiny_llama_lm} --data {text_dir} --importance {importance} " \
           "--calibration-samples 8 --calibration-length 32 --max-length 32 --device cpu"  # fmt: skip
    assert cli(f"{base} --out {tmp_path / 'f32'}") == 0
    assert cli(f"{base} --dtype bfloat16 --out {tmp_path / 'bf16'}") == 0
    f32, bf16 = _summary(tmp_path / "f32"), _summary(tmp_path / "bf16")
    assert (bf16["dtype"], bf16["device"], f32["dtype"]) == ("bfloat16", "cpu", "float32") and bf16["device_name"]
    assert _agreement(tmp_path / "f32", tmp_path / "bf16") >= 0.95
    assert bf16["metrics"]["perplexity"] == pytest.approx(f32["metrics"]["perplexity"], rel=0.05)
    assert _stored_dtypes(tmp_path / "bf16") == {"BF16"}


def test_structured_pruning_and_evaluation_in_bfloat16(tiny_bert, sentiment_dir, tmp_path):
    """Taylor scores from bfloat16 gradients keep as many units as float32 (the same counts) and an
    accuracy within 0.1; evaluate in bfloat16 scores within 0.1 of float32."""
    base = f"prune structured --model {tiny_bert} --data {sentiment_dir} --heads 0.5 --ffn 0.5 " \
           "--calibration-samples 32 --max-length 16 --device cpu"  # fmt: skip
    assert cli(f"{base} --out {tmp_path / 'f32'}") == 0
    assert cli(f"{base} --dtype bfloat16 --save-dtype float32 --out {tmp_path / 'bf16'}") == 0
    f32, bf16 = _summary(tmp_path / "f32"), _summary(tmp_path / "bf16")
    assert bf16["params_total"] == f32["params_total"] and bf16["dtype"] == "bfloat16"
    assert abs(bf16["metrics"]["accuracy"] - f32["metrics"]["accuracy"]) <= 0.1
    assert _stored_dtypes(tmp_path / "bf16") == {"F32"}  # --save-dtype
    for dtype in ("float32", "bfloat16"):
        assert cli(f"evaluate --model {tiny_bert} --data {sentiment_dir} --max-length 16 --dtype {dtype} "
                   f"--json {tmp_path / dtype}.json") == 0  # fmt: skip
    scores = [json.loads((tmp_path / f"{dtype}.json").read_text()) for dtype in ("float32", "bfloat16")]
    assert abs(scores[0]["metrics"]["accuracy"] - scores[1]["metrics"]["accuracy"]) <= 0.1


def test_lora_finetuning_in_bfloat16_mixed_precision_on_the_cpu(tiny_bert, sentiment_dir, tmp_path):
    """Mixed precision trains float32 weights (saved as float32) to a final loss within 10 % of float32."""
    base = f"finetune --model {tiny_bert} --data {sentiment_dir} --lora --lr 1e-3 --max-steps 6 --batch-size 16 " \
           "--max-length 16 --device cpu"  # fmt: skip
    assert cli(f"{base} --out {tmp_path / 'f32'}") == 0
    assert cli(f"{base} --dtype bfloat16 --out {tmp_path / 'bf16'}") == 0
    f32, bf16 = _summary(tmp_path / "f32"), _summary(tmp_path / "bf16")
    assert bf16["dtype"] == "bfloat16" and _stored_dtypes(tmp_path / "bf16") == {"F32"}
    assert bf16["train"]["loss"] == pytest.approx(f32["train"]["loss"], rel=0.1)


def test_a_bfloat16_model_exports_as_a_float32_graph(tiny_bert, tmp_path):
    """The export runs on the CPU in float32: a model saved in bfloat16 passes the parity check."""
    assert cli(f"prune magnitude --model {tiny_bert} --sparsity 0.5 --dtype bfloat16 --out {tmp_path / 'bf16'}") == 0
    assert _stored_dtypes(tmp_path / "bf16") == {"BF16"}
    out = tmp_path / "model.onnx"
    assert cli(f"export onnx --model {tmp_path / 'bf16'} --out {out} --seq-len 16 --repeats 2 --json {out}.json") == 0
    assert json.loads((tmp_path / "model.onnx.json").read_text())["max_abs_diff"] <= 1e-4


def test_devices_the_machine_lacks_are_one_line_errors(tiny_bert, sentiment_dir, tmp_path, capsys):
    if CUDA:
        pytest.skip("this machine has a CUDA device")
    assert cli(f"evaluate --model {tiny_bert} --data {sentiment_dir} --device cuda") == 2
    assert "--device cuda: this machine has no CUDA device" in capsys.readouterr().err
    assert cli(f"prune magnitude --model {tiny_bert} --device tpu --out {tmp_path / 'x'}") == 2
    assert "--device tpu: expected auto, cpu, cuda or cuda:N" in capsys.readouterr().err
    assert cli(f"finetune --model {tiny_bert} --data {sentiment_dir} --dtype float16 --out {tmp_path / 'x'}") == 2
    assert "on a CPU: bfloat16" in capsys.readouterr().err
    import prunekit
    from prunekit.models import load_model

    with pytest.raises(ConfigError, match="no CUDA device"):
        prunekit.prune_magnitude(load_model(str(tiny_bert))[0], device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="no CUDA device here")
def test_one_shot_pruning_and_training_on_the_gpu_match_the_cpu(tiny_llama_lm, tiny_bert, text_dir, sentiment_dir,
                                                                tmp_path):  # fmt: skip
    """On a GPU: SparseGPT's masks agree with the CPU's (>= 95 %), perplexity within 5 %; a finetune runs
    there (the summary says cuda) to a loss within 10 % of the CPU's."""
    base = f"prune magnitude --model {tiny_llama_lm} --data {text_dir} --importance sparsegpt " \
           "--calibration-samples 8 --calibration-length 32 --max-length 32"  # fmt: skip
    assert cli(f"{base} --device cpu --out {tmp_path / 'cpu'}") == 0
    assert cli(f"{base} --device cuda --out {tmp_path / 'gpu'}") == 0
    cpu, gpu_run = _summary(tmp_path / "cpu"), _summary(tmp_path / "gpu")
    assert gpu_run["device"].startswith("cuda") and _agreement(tmp_path / "cpu", tmp_path / "gpu") >= 0.95
    assert gpu_run["metrics"]["perplexity"] == pytest.approx(cpu["metrics"]["perplexity"], rel=0.05)
    train = f"finetune --model {tiny_bert} --data {sentiment_dir} --max-steps 6 --batch-size 16 --max-length 16"
    assert cli(f"{train} --device cpu --out {tmp_path / 'ft-cpu'}") == 0
    assert cli(f"{train} --device cuda --dtype bfloat16 --out {tmp_path / 'ft-gpu'}") == 0
    assert _summary(tmp_path / "ft-gpu")["device"].startswith("cuda")
    assert _summary(tmp_path / "ft-gpu")["train"]["loss"] == pytest.approx(
        _summary(tmp_path / "ft-cpu")["train"]["loss"], rel=0.1
    )
