"""The language-modelling loss without logits: the same value and gradients as transformers' loss."""

from __future__ import annotations

import pytest
import torch

from prunekit.lm_loss import causal_lm_loss, head_returns_hidden
from prunekit.models import load_model


def _batch(vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab, (3, 11), generator=generator)
    labels = ids.clone()
    labels[0, :4] = -100  # e.g. padding or a prompt: not scored
    return ids, labels


@pytest.mark.parametrize("num_items", [None, 17])
def test_loss_and_gradients_equal_the_models_own(tiny_llama_lm, num_items):
    model, _ = load_model(str(tiny_llama_lm))
    ids, labels = _batch(model.config.vocab_size)
    kwargs = {} if num_items is None else {"num_items_in_batch": num_items}
    expected = model(input_ids=ids, labels=labels, **kwargs).loss
    expected.backward()
    reference = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()

    head = model.get_output_embeddings()
    with head_returns_hidden(head):
        hidden = model(input_ids=ids).logits
    assert hidden.shape[-1] == model.config.hidden_size
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        loss = causal_lm_loss(hidden, head, labels, num_items, chunk=5)  # chunks split rows mid-sequence
    assert not [t for t in saved if t.dim() == 2 and t.shape[0] > 1 and t.shape[-1] == model.config.vocab_size]
    loss.backward()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    for name, param in model.named_parameters():
        assert torch.allclose(param.grad, reference[name], atol=1e-6, rtol=1e-4), name
    out = head(torch.zeros(1, model.config.hidden_size))  # the head computes logits again
    assert out.shape == (1, model.config.vocab_size)


def test_training_a_causal_lm_uses_it_and_learns_what_the_models_own_loss_teaches(tiny_llama_lm, text_dir, monkeypatch):
    import sys
    import types

    import prunekit

    finetune_module = sys.modules["prunekit.training.finetune"]  # the package exports a function by that name

    def train() -> list:
        model, tokenizer = load_model(str(tiny_llama_lm))
        result = prunekit.finetune(model, tokenizer, str(text_dir), max_steps=3, batch_size=2, max_length=32,
                                   lr=1e-3, max_eval_tokens=128)  # fmt: skip
        return [loss for _, loss in result.summary["train"]["loss_curve"]]

    calls = []
    real = finetune_module.causal_lm_loss
    monkeypatch.setattr(finetune_module, "causal_lm_loss", lambda *a, **k: calls.append(1) or real(*a, **k))
    chunked = train()
    assert len(calls) == 3
    monkeypatch.setattr(finetune_module, "nn", types.SimpleNamespace(Linear=type("NotAHead", (), {})))
    assert train() == pytest.approx(chunked, rel=1e-5)  # transformers' own loss over the full logits
    assert len(calls) == 3
