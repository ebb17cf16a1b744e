"""The language-modelling losses without the logits: the output head and the cross-entropy (or a teacher's
soft-target loss) are computed together over chunks of tokens, and each chunk's gradients are taken right
away, so neither the (tokens x vocabulary) logits nor their gradient is ever held whole — for SmolLM2's
49,152-word vocabulary at 2,048 tokens a step that is ~0.4 GB per copy, and autograd kept three or four
(distillation: of both models).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

IGNORE = -100  # label of a position without a next token (the Hugging Face convention)
CHUNK_TOKENS = 512


class _HeadGradients:
    """The gradients of a summed loss over (hidden, weight, bias) of an output head, filled chunk by chunk
    in a Function's forward pass and handed back, scaled, by its backward pass."""

    def __init__(self, ctx, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
        self.hidden = torch.zeros_like(hidden) if ctx.needs_input_grad[0] else None
        self.weight = torch.zeros_like(weight) if ctx.needs_input_grad[1] else None
        self.bias = torch.zeros_like(bias) if bias is not None and ctx.needs_input_grad[2] else None

    def add(self, start: int, grad: torch.Tensor, h: torch.Tensor, weight: torch.Tensor) -> None:
        """Add one chunk's gradient ``grad`` (d loss / d logits) for its hidden states ``h`` at row ``start``."""
        if self.hidden is not None:
            self.hidden[start : start + len(h)] = (grad.to(weight.dtype) @ weight).to(self.hidden.dtype)
        if self.weight is not None:
            self.weight += (grad.T @ h.float()).to(self.weight.dtype)
        if self.bias is not None:
            self.bias += grad.sum(0).to(self.bias.dtype)

    def save(self, ctx, other_inputs: int) -> None:
        grads = (self.hidden, self.weight, self.bias)
        ctx.save_for_backward(*(g for g in grads if g is not None))
        ctx.present, ctx.other_inputs = tuple(g is not None for g in grads), other_inputs

    @staticmethod
    def backward(ctx, grad_total):
        saved = iter(ctx.saved_tensors)
        grads = [next(saved) * grad_total if present else None for present in ctx.present]
        return *grads, *[None] * ctx.other_inputs


class _LinearCrossEntropy(torch.autograd.Function):
    """sum over tokens of cross_entropy(hidden @ weightᵀ + bias, labels); the backward pass returns the
    gradients computed in the forward pass, chunk by chunk."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, chunk):
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grads = _HeadGradients(ctx, hidden, weight, bias)
        for start in range(0, hidden.shape[0], chunk):
            h, target = hidden[start : start + chunk], labels[start : start + chunk]
            kept = target != IGNORE
            if not kept.any():
                continue
            logits = F.linear(h, weight, bias).float()
            total += F.cross_entropy(logits, target, ignore_index=IGNORE, reduction="sum")
            grad = torch.softmax(logits, dim=-1)  # d loss / d logits = softmax - one-hot, on kept tokens only
            grad[kept, target[kept]] -= 1
            grad[~kept] = 0
            grads.add(start, grad, h, weight)
        grads.save(ctx, other_inputs=2)
        return total

    backward = _HeadGradients.backward


def causal_lm_loss(
    hidden: torch.Tensor,
    head: nn.Linear,
    labels: torch.Tensor,
    num_items_in_batch: int | torch.Tensor | None = None,
    chunk: int = CHUNK_TOKENS,
) -> torch.Tensor:
    """The next-token loss of ``head(hidden)`` against ``labels`` (shifted by one, ``-100`` ignored), as
    transformers computes it — the mean over predicted tokens, or the sum over ``num_items_in_batch`` —
    without materialising the logits."""
    shifted = F.pad(labels, (0, 1), value=IGNORE)[..., 1:].reshape(-1).to(hidden.device)
    flat = hidden.reshape(-1, hidden.shape[-1])
    total = _LinearCrossEntropy.apply(flat, head.weight, head.bias, shifted, chunk)
    count = num_items_in_batch if num_items_in_batch is not None else (shifted != IGNORE).sum()
    return total / count


class _LinearDistillation(torch.autograd.Function):
    """sum over tokens of T² · KL(softmax(teacher_hidden @ teacher_weightᵀ / T) ‖ softmax(hidden @ weightᵀ / T)),
    chunk by chunk, with the student's gradients computed in the forward pass (d/dz = T · (q − p))."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, teacher_hidden, teacher_weight, teacher_bias, temperature, chunk):
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grads = _HeadGradients(ctx, hidden, weight, bias)
        for start in range(0, hidden.shape[0], chunk):
            h = hidden[start : start + chunk]
            log_q = F.log_softmax(F.linear(h, weight, bias).float() / temperature, dim=-1)
            teacher = F.linear(teacher_hidden[start : start + chunk], teacher_weight, teacher_bias)
            log_p = F.log_softmax(teacher.float() / temperature, dim=-1)
            del teacher
            p = log_p.exp()
            total += (p * (log_p - log_q)).sum() * temperature**2
            grad = (log_q.exp_() - p).mul_(temperature)  # in place: the chunk's log_q is not needed again
            del log_p, log_q, p
            grads.add(start, grad, h, weight)
        grads.save(ctx, other_inputs=5)
        return total

    backward = _HeadGradients.backward


def causal_lm_kd_loss(
    hidden: torch.Tensor,
    head: nn.Linear,
    teacher_hidden: torch.Tensor,
    teacher_head: nn.Linear,
    temperature: float,
    mask: torch.Tensor | None = None,
    chunk: int = CHUNK_TOKENS,
) -> torch.Tensor:
    """Per-token soft-target loss, T² · KL(teacher ‖ student) averaged over the tokens where ``mask`` (batch,
    seq) is 1 (every token without one), from the two models' final hidden states and output heads — as
    ``training.distill.kd_loss`` on their logits, without either model's (tokens x vocabulary) logits."""
    flat = hidden.reshape(-1, hidden.shape[-1])
    teacher_flat = teacher_hidden.reshape(-1, teacher_hidden.shape[-1]).to(flat.device)
    if mask is not None:
        keep = mask.reshape(-1).bool().to(flat.device)
        flat, teacher_flat = flat[keep], teacher_flat[keep]
    total = _LinearDistillation.apply(flat, head.weight, head.bias, teacher_flat, teacher_head.weight,
                                      teacher_head.bias, temperature, chunk)  # fmt: skip
    return total / flat.shape[0]


def plain_head(model: nn.Module) -> nn.Linear | None:
    """A causal LM's output head when it is a plain linear layer (its loss can skip the logits), else None
    (an encoder, a head wrapped by an adapter, or one whose weights accelerate offloads)."""
    head = model.get_output_embeddings() if type(model).__name__.endswith("ForCausalLM") else None
    placed = hasattr(head, "_hf_hook")  # accelerate brings its weights in for each forward (offloaded)
    return head if type(head) is nn.Linear and not placed else None


@contextmanager
def head_returns_hidden(head: nn.Module):
    """While inside, the causal LM's output head passes its input through: the model's ``logits`` are its
    final hidden states, for ``causal_lm_loss``."""
    head.forward = lambda hidden: hidden
    try:
        yield
    finally:
        del head.forward
