"""The language-modelling loss without logits: the same value and gradients as transformers' loss."""

from __future__ import annotations

import pytest
import torch

from prunekit.models import load_model
from prunekit.training.lm_loss import causal_lm_loss, head_returns_hidden


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
    assert not [t for t in saved if t.shape[-1] == model.config.vocab_size and t.dim() == 2 and t.shape[0] > 1]
    loss.backward()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    for name, param in model.named_parameters():
        assert torch.allclose(param.grad, reference[name], atol=1e-6, rtol=1e-4), name
    out = head(torch.zeros(1, model.config.hidden_size))  # the head computes logits again
    assert out.shape == (1, model.config.vocab_size)
