"""The language-modelling losses without logits: the same values and gradients as on the full logits."""

from __future__ import annotations

import pytest
import torch

from prunekit.lm_loss import causal_lm_kd_loss, causal_lm_loss, head_returns_hidden
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
    monkeypatch.setattr(finetune_module, "plain_head", lambda model: None)
    assert train() == pytest.approx(chunked, rel=1e-5)  # transformers' own loss over the full logits
    assert len(calls) == 3


@pytest.mark.parametrize("masked", [False, True])
def test_the_distillation_loss_equals_kd_loss_on_the_logits(masked):
    from prunekit.training.distill import kd_loss

    torch.manual_seed(0)
    head, teacher_head = torch.nn.Linear(16, 40), torch.nn.Linear(16, 40)
    hidden, teacher_hidden = torch.randn(3, 7, 16, requires_grad=True), torch.randn(3, 7, 16)
    mask = (torch.rand(3, 7) > 0.3).long() if masked else None
    expected = kd_loss(head(hidden), teacher_head(teacher_hidden), 2.0, mask)
    expected.backward()
    reference = [t.grad.clone() for t in (hidden, head.weight, head.bias)]
    for t in (hidden, head.weight, head.bias, teacher_head.weight, teacher_head.bias):
        t.grad = None
    loss = causal_lm_kd_loss(hidden, head, teacher_hidden, teacher_head, 2.0, mask, chunk=4)
    loss.backward()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    for got, want in zip((hidden.grad, head.weight.grad, head.bias.grad), reference):
        assert torch.allclose(got, want, atol=1e-6, rtol=1e-4)
    assert teacher_head.weight.grad is None  # the teacher is not trained


def test_distilling_a_causal_lm_never_holds_logits_and_learns_as_on_the_logits(tiny_llama_lm, text_dir, monkeypatch):
    import sys

    import prunekit.training.distill  # noqa: F401 (the package exports a function by that name)
    from prunekit.data.text import load_text_corpus
    from prunekit.training.config import FinetuneConfig
    from prunekit.training.distill_config import DistillConfig

    distill_module = sys.modules["prunekit.training.distill"]

    def train(tmp: str) -> tuple[list, list]:
        student, tokenizer = load_model(str(tiny_llama_lm))
        teacher, _ = load_model(str(tiny_llama_lm))
        torch.manual_seed(0)
        with torch.no_grad():
            for param in teacher.parameters():
                param.add_(0.05 * torch.randn_like(param))
        data = load_text_corpus(str(text_dir), need_train=True, need_eval=False)
        widths = []
        for model in (student, teacher):
            model.get_output_embeddings().register_forward_hook(lambda m, a, out: widths.append(out.shape[-1]))
        config = FinetuneConfig(max_steps=3, batch_size=2, max_length=32, lr=1e-3, seed=0)
        trainer = distill_module.distill(student, teacher, tokenizer, data.train, data.task, config,
                                         DistillConfig(alpha_kd=0.5, alpha_ce=0.5, temperature=2.0), tmp)  # fmt: skip
        losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
        return losses, widths

    vocab = load_model(str(tiny_llama_lm))[0].config.vocab_size
    chunked, widths = train(str(text_dir.parent / "chunked"))
    assert len(chunked) == 3 and widths and vocab not in widths  # both heads passed hidden states through
    monkeypatch.setattr(distill_module, "plain_head", lambda model: None)
    on_logits, widths = train(str(text_dir.parent / "logits"))
    assert vocab in widths  # the fallback computes the logits
    assert on_logits == pytest.approx(chunked, rel=1e-4)
