"""SparseGPT fit to the dense model's outputs (``--fit-to dense``, asymmetric calibration): nothing moves when
the inputs are the dense ones; closer to the dense outputs than the published fit when they are not."""

from __future__ import annotations

import pytest
import torch

from prunekit.adapters import get_adapter
from prunekit.methods.magnitude import MagnitudeConfig, prune_magnitude
from prunekit.models import load_model
from prunekit.pruning.sparsegpt import sparsegpt_prune
from tests.conftest import cli
from tests.test_llm import _calibration, _correlated_inputs
from tests.tiny import save_tiny_causal_lm, save_tiny_model


@pytest.mark.parametrize("family", ["llama", "bert"])
def test_where_no_pruned_layer_came_before_nothing_moves(family, tmp_path):
    """Layer 0 sees the dense inputs on both sides (and, scored together, every projection reads what the
    dense layer computes): its pruned weights are bit-identical to the published fit's; layer 1's are not.
    (BERT's query reads the layer's input itself, which the drift must not overwrite.)"""
    folder = save_tiny_causal_lm("llama", tmp_path / "lm") if family == "llama" else save_tiny_model("bert", tmp_path)
    weights = {}
    for fit in ("pruned", "dense"):
        model, tokenizer = load_model(str(folder))
        config = MagnitudeConfig(sparsity=0.5, importance="sparsegpt", fit_to=fit, within_layer="together")
        masks = prune_magnitude(model, config, _calibration(tokenizer, count=8, length=32))
        weights[fit] = {name: model.get_parameter(name).detach().clone() for name in masks.masks}
    first, second = (
        [name for name in weights["dense"] if name.startswith(prefix)]
        for prefix in get_adapter(model).layer_prefixes()[:2]
    )
    assert first and all(torch.equal(weights["dense"][name], weights["pruned"][name]) for name in first)
    assert not all(torch.equal(weights["dense"][name], weights["pruned"][name]) for name in second)


@pytest.mark.parametrize("pattern", [None, (2, 4)])
def test_fit_to_dense_reproduces_the_dense_outputs_better(pattern):
    """Inputs that drifted from the dense ones (earlier layers pruned): the asymmetric fit's error against
    the dense outputs is lower than the published fit's, which only matches W on the drifted inputs."""
    generator = torch.Generator().manual_seed(1)
    weight = torch.randn(24, 32, generator=generator)
    dense_x = _correlated_inputs(512, 32, seed=2)
    x = dense_x + 0.3 * dense_x.std() * torch.randn(dense_x.shape, generator=generator)
    hessian = x.double().T @ x.double() / len(x)
    drift = (dense_x - x).T @ x / len(x)
    published, asymmetric = weight.clone(), weight.clone()
    sparsegpt_prune(published, hessian.clone(), pattern=pattern, block_size=16)
    keep = sparsegpt_prune(asymmetric, hessian.clone(), pattern=pattern, block_size=16, input_drift=drift)
    target = dense_x @ weight.T

    def error(w: torch.Tensor) -> float:
        return float(((x @ w.T - target) ** 2).sum())

    assert torch.equal(asymmetric != 0, keep) and int(keep.sum()) == weight.numel() // 2
    assert error(asymmetric) < 0.8 * error(published)


def test_fit_to_dense_brings_a_pruned_model_closer_to_the_dense_one(tmp_path):
    folder = save_tiny_causal_lm("llama", tmp_path / "lm")
    dense, tokenizer = load_model(str(folder))
    batches = _calibration(tokenizer, count=8, length=32)
    outputs = {}
    for fit in ("pruned", "dense"):
        model, _ = load_model(str(folder))
        masks = prune_magnitude(model, MagnitudeConfig(sparsity=0.6, importance="sparsegpt", fit_to=fit), batches)
        assert masks.sparsity() == pytest.approx(0.6, abs=0.01)
        with torch.no_grad():
            outputs[fit] = torch.cat([model(**batch).logits for batch in batches])
    with torch.no_grad():
        reference = torch.cat([dense(**batch).logits for batch in batches])
    errors = {fit: float(((logits - reference) ** 2).mean()) for fit, logits in outputs.items()}
    assert errors["dense"] < 0.6 * errors["pruned"], errors  # ~0.27x measured over 3 seeds


def test_fit_to_is_refused_where_it_does_nothing(tiny_llama_lm, text_dir, tmp_path, capsys):
    out = tmp_path / "out"
    command = f"prune magnitude --model {tiny_llama_lm} --data {text_dir} --importance wanda --fit-to dense --out {out}"
    assert cli(command) == 2
    err = capsys.readouterr().err
    assert "--fit-to" in err and "sparsegpt" in err and "Traceback" not in err
