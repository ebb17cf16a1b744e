"""`prunekit export onnx`: every model kind exports, and ONNX Runtime computes what PyTorch computes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from prunekit.export.onnx import LogitsGraph, OnnxRunner, graph_inputs
from prunekit.models import load_model
from prunekit.pruning.masks import MaskSet
from tests.conftest import cli, tree_digest
from tests.tiny import save_tiny_model

EXPORT = "export onnx --seq-len 16 --repeats 2 --threads 1"


def _onnx_matches_torch(folder, path) -> None:
    """An independent check on inputs the export never saw: 3 rows of 9 tokens, one padded."""
    model, tokenizer = load_model(str(folder))
    vocab = model.get_input_embeddings().num_embeddings
    ids = torch.randint(0, vocab, (3, 9), generator=torch.Generator().manual_seed(7))
    mask = torch.ones_like(ids)
    mask[2, 5:] = 0
    inputs = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in graph_inputs(model, tokenizer):
        inputs["token_type_ids"] = torch.zeros_like(ids)
    with torch.inference_mode():
        expected = LogitsGraph(model.eval())(**inputs).numpy()
    got = OnnxRunner(path)(**inputs)
    if got.ndim == 3:  # a causal LM: compare the positions the mask keeps
        keep = mask.numpy().astype(bool)
        got, expected = got[keep], expected[keep]
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def _pruned(kind: str, tiny_bert, tiny_llama_lm, text_dir, sentiment_dir, tmp_path):
    if kind == "bert":
        return tiny_bert
    if kind == "llama-lm":
        return tiny_llama_lm
    out = tmp_path / kind
    if kind == "bert-sparse":
        command = f"prune magnitude --model {tiny_bert} --sparsity 0.6 --save-format sparse --out {out}"
    elif kind == "bert-ragged":
        command = f"prune structured --model {tiny_bert} --data {sentiment_dir} --heads 0.5 --ffn 0.4 --round-to 1 " \
                  f"--max-length 16 --out {out}"  # fmt: skip
    else:  # llama-lm-gqa: GQA heads and FFN neurons removed from a decoder, widths differ per layer
        command = f"prune structured --model {tiny_llama_lm} --data {text_dir} --heads 0.5 --ffn 0.5 " \
                  f"--calibration-samples 8 --calibration-length 32 --max-length 32 --out {out}"  # fmt: skip
    assert cli(command) == 0
    return out


@pytest.mark.parametrize("kind", ["bert", "bert-sparse", "bert-ragged", "llama-lm", "llama-lm-gqa"])
def test_every_model_kind_exports_and_runs_the_same_under_onnx_runtime(
    kind, tiny_bert, tiny_llama_lm, text_dir, sentiment_dir, tmp_path
):
    folder = _pruned(kind, tiny_bert, tiny_llama_lm, text_dir, sentiment_dir, tmp_path)
    path, result = tmp_path / "model.onnx", tmp_path / "export.json"
    assert cli(f"{EXPORT} --model {folder} --out {path} --json {result}") == 0
    summary = json.loads(result.read_text())
    assert summary["kind"] == "export" and summary["format"] == "onnx" and summary["size_bytes"] == path.stat().st_size
    assert summary["max_abs_diff"] <= 1e-4 and summary["ratio_vs_torch"] > 0
    assert summary["onnxruntime_latency_ms"]["seq_len"] == 16
    assert ("token_type_ids" in summary["inputs"]) == kind.startswith("bert")
    _onnx_matches_torch(folder, path)
    if kind == "bert-sparse":  # the zeros are in the graph's weights
        import onnx
        from onnx import numpy_helper

        model, _ = load_model(str(folder))
        pruned = sum(int((~mask).sum()) for mask in MaskSet.load(str(folder), model).masks.values())
        weights = [numpy_helper.to_array(tensor) for tensor in onnx.load(str(path)).graph.initializer]
        assert sum(int((w == 0).sum()) for w in weights if w.ndim == 2) >= pruned > 0


def test_export_mistakes_get_one_line_errors_and_write_nothing(tiny_bert, tmp_path, capsys):
    existing = tmp_path / "taken.onnx"
    existing.write_bytes(b"keep me")
    leftover = tmp_path / ".taken.onnx.tmp-999999"  # a killed export's temp file (no such process)
    leftover.write_bytes(b"half a model")
    before = tree_digest(tiny_bert)
    cases = [
        (f"--model {tiny_bert} --out {existing}", "file exists; pass --overwrite"),
        (f"--model {tiny_bert} --out {tiny_bert / 'model.onnx'}", "inside --model"),
        (f"--model {tiny_bert} --out {tmp_path}", "is a folder"),
        (f"--model {tmp_path / 'missing'} --out {tmp_path / 'm.onnx'}", "--model"),
        (f"--model {tiny_bert} --out {tmp_path / 'm.onnx'} --atol 0", "--atol 0"),
    ]
    for flags, message in cases:
        assert cli(f"{EXPORT} {flags}") == 2, flags
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert existing.read_bytes() == b"keep me" and tree_digest(tiny_bert) == before
    assert not leftover.exists()  # removed before the first check
    assert not (tmp_path / "m.onnx").exists()


def test_an_export_that_disagrees_with_pytorch_is_refused_and_removed(tiny_bert, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("prunekit.export.max_difference", lambda *args: (0.5, 0.5))
    path = tmp_path / "m.onnx"
    assert cli(f"{EXPORT} --model {tiny_bert} --out {path}") == 2
    assert "differ from PyTorch's by 0.5" in capsys.readouterr().err
    assert not path.exists() and not list(tmp_path.glob(".m.onnx*"))


def test_rtol_allows_a_share_of_each_logit_on_top_of_atol(tiny_bert, tmp_path, capsys):
    """The tiny model's logits are ~0.1 and its export differs by ~1e-8: an atol of 1e-12 refuses it,
    the same atol with rtol 1e-3 (1e-4 of room per logit) accepts it and records both bounds."""
    path = tmp_path / "m.onnx"
    assert cli(f"{EXPORT} --model {tiny_bert} --out {path} --atol 1e-12") == 2
    assert "(> --atol 1e-12)" in capsys.readouterr().err and not path.exists()
    summary = tmp_path / "s.json"
    assert cli(f"{EXPORT} --model {tiny_bert} --out {path} --atol 1e-12 --rtol 1e-3 --json {summary}") == 0
    result = json.loads(summary.read_text())
    assert result["rtol"] == 1e-3 and result["atol"] == 1e-12 and 1e-12 < result["max_abs_diff"] < 1e-4


def test_a_float64_reference_judges_onnx_by_pytorchs_own_rounding(tiny_bert, tmp_path, capsys):
    """--reference float64: ONNX Runtime may differ from PyTorch float32 by as much as float32 rounding
    allows (both are compared with the model run in float64); a far-off graph is still refused."""
    summary, path = tmp_path / "s.json", tmp_path / "m.onnx"
    assert cli(f"{EXPORT} --model {tiny_bert} --out {path} --reference float64 --atol 1e-6 --json {summary}") == 0
    result = json.loads(summary.read_text())
    assert result["reference"] == "float64" and result["beyond_reference"] <= 1e-6


def test_a_graph_far_from_float64_is_refused(tiny_bert, tmp_path, monkeypatch, capsys):
    from prunekit.export import onnx as onnx_module

    run = onnx_module.OnnxRunner.__call__
    monkeypatch.setattr(onnx_module.OnnxRunner, "__call__", lambda self, **inputs: run(self, **inputs) + 0.01)
    path = tmp_path / "m.onnx"
    assert cli(f"{EXPORT} --model {tiny_bert} --out {path} --reference float64") == 2
    assert "further from float64 than PyTorch float32 is, > --atol 0.0001" in capsys.readouterr().err
    assert not path.exists()


def test_export_without_onnx_says_how_to_install(tiny_bert, tmp_path, monkeypatch, capsys):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real_find_spec(name, *a)
    )
    assert cli(f"{EXPORT} --model {tiny_bert} --out {tmp_path / 'm.onnx'}") == 2
    assert "pip install 'prunekit[export]'" in capsys.readouterr().err


def test_a_llama_classifier_exports_too(tmp_path):
    folder = save_tiny_model("llama", tmp_path / "llama-cls")
    path = tmp_path / "llama.onnx"
    assert cli(f"{EXPORT} --model {folder} --out {path}") == 0
    _onnx_matches_torch(folder, path)


@pytest.mark.parametrize("opset", ["17", "25"])
def test_the_ends_of_the_opset_range_are_written_as_asked(opset, tiny_bert, tmp_path):
    """--opset's range is what the exporter writes as asked and ONNX Runtime runs (below 17 torch.onnx
    silently wrote 18; above 25 a graph ONNX Runtime refuses): both ends still hold here."""
    from prunekit.export.onnx import written_opset
    from prunekit.stages.export import OPSETS

    assert opset in {str(OPSETS[0]), str(OPSETS[1])}
    out = tmp_path / "model.onnx"
    assert cli(f"{EXPORT} --model {tiny_bert} --out {out} --opset {opset}") == 0
    assert written_opset(out) == int(opset)
    _onnx_matches_torch(tiny_bert, out)
