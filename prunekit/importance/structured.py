"""Importance of structural units: one score per attention head and FFN neuron, or per layer.

Unit criteria (``UNIT_CRITERIA``, by name):
- ``magnitude``: L2 norm of the unit's weights (its q/k/v rows and output-projection columns; its
  up/gate rows and down-projection column).
- ``taylor`` (alias ``head-mask-gradient``): Michel et al. (2019), ``E |∂L/∂gate|`` over labelled
  batches, with a gate of 1 on each unit's output; normalised per layer (L2), as in the paper.
- ``fisher``: Kwon et al. (2022), the diagonal empirical Fisher information of each unit's mask,
  ``Σ_i (∂L_i/∂gate)²`` over the calibration examples (per-example gradients from one backward pass
  per batch); normalised per layer like ``taylor``. The whole per-layer Fisher matrices come with the
  scores (``interactions``) for ``pruning.units.rearrange``.
- ``activation``: mean |output| of the unit over the non-padding tokens of calibration batches.
- ``random``: a seeded random score, the control every criterion should beat.

Layer criteria (``LAYER_CRITERIA``): ``drop-one`` (loss increase when the layer is skipped) and
``block-influence`` (1 − cosine similarity of the layer's input and output hidden states).

Memory stays bounded whatever the calibration batch: every pass runs a batch in pieces of at most
``PIECE_TOKENS`` tokens (gradients summed over the pieces before they are read), and a causal LM's loss
is computed without its logits (``prunekit.lm_loss``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from prunekit.adapters.base import ModelAdapter
from prunekit.errors import ConfigError
from prunekit.lm_loss import causal_lm_loss, head_returns_hidden, plain_head
from prunekit.pruning.gates import UnitGates

Batch = dict[str, torch.Tensor]
# tokens per forward (and backward) pass of a scoring pass. Measured on SmolLM2-135M (`prune structured
# --heads 0.67 --ffn 0.75`, Taylor): 4096 passed 6 GiB in the first piece, 1024 peaked at 3.5 GiB.
PIECE_TOKENS = 1024


@dataclass
class UnitScores:
    """Per layer: one score per head, one per FFN neuron (higher = more important)."""

    heads: list[torch.Tensor]
    neurons: list[torch.Tensor]
    # ``fisher`` only: per layer, the units' Fisher matrix Σᵢ gᵢ gᵢᵀ (heads, then neurons), for rearrangement
    interactions: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None


UnitCriterion = Callable[[ModelAdapter, Sequence[Batch], int], UnitScores]
UNIT_CRITERIA: dict[str, UnitCriterion] = {}
LAYER_CRITERIA: dict[str, Callable[[ModelAdapter, Sequence[Batch]], torch.Tensor]] = {}
NEEDS_DATA = {"taylor", "head-mask-gradient", "fisher", "activation", "drop-one", "block-influence"}
NEEDS_GRADIENTS = {"taylor", "head-mask-gradient", "fisher"}  # a backward pass per piece of a batch


def unit_criterion(*names: str):
    def register(fn: UnitCriterion) -> UnitCriterion:
        for name in names:
            UNIT_CRITERIA[name] = fn
        return fn

    return register


def layer_criterion(name: str):
    def register(fn):
        LAYER_CRITERIA[name] = fn
        return fn

    return register


def score_units(name: str, adapter: ModelAdapter, batches: Sequence[Batch] = (), seed: int = 0) -> UnitScores:
    if name not in UNIT_CRITERIA:
        raise ConfigError(f"--importance {name}: unknown; choose from {', '.join(sorted(UNIT_CRITERIA))}")
    if name in NEEDS_DATA and not batches:
        raise ConfigError(f"--importance {name} needs calibration data: pass --data")
    return UNIT_CRITERIA[name](adapter, batches, seed)


def score_layers(name: str, adapter: ModelAdapter, batches: Sequence[Batch]) -> torch.Tensor:
    if name not in LAYER_CRITERIA:
        raise ConfigError(f"--layer-importance {name}: unknown; choose from {', '.join(sorted(LAYER_CRITERIA))}")
    if not batches:
        raise ConfigError(f"--layer-importance {name} needs calibration data: pass --data")
    return LAYER_CRITERIA[name](adapter, batches)


@unit_criterion("magnitude")
@torch.no_grad()
def magnitude(adapter: ModelAdapter, batches: Sequence[Batch] = (), seed: int = 0) -> UnitScores:
    heads, neurons = [], []
    for layer in adapter.layers():
        attn, ffn = layer.attention, layer.ffn
        n, d = attn.num_heads, attn.head_dim
        hidden = attn.query.in_features
        sq = attn.query.weight.view(n, d, hidden).square().sum((1, 2))
        sq += attn.output.weight.view(hidden, n, d).square().sum((0, 2))
        if not attn.grouped:  # K/V are per head only without grouped-query attention
            sq += attn.key.weight.view(n, d, hidden).square().sum((1, 2))
            sq += attn.value.weight.view(n, d, hidden).square().sum((1, 2))
        heads.append(sq.sqrt().float().cpu())
        sq = ffn.up.weight.square().sum(1) + ffn.down.weight.square().sum(0)
        if ffn.gate is not None:
            sq += ffn.gate.weight.square().sum(1)
        neurons.append(sq.sqrt().float().cpu())
    return UnitScores(heads, neurons)


@unit_criterion("random")
def random_scores(adapter: ModelAdapter, batches: Sequence[Batch] = (), seed: int = 0) -> UnitScores:
    generator = torch.Generator().manual_seed(seed)
    layers = adapter.layers()
    return UnitScores(
        [torch.rand(layer.attention.num_heads, generator=generator) for layer in layers],
        [torch.rand(layer.ffn.num_neurons, generator=generator) for layer in layers],
    )


@contextmanager
def _frozen_eval(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode (no dropout) and no parameter gradients; restored afterwards."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        model.train(was_training)
        for p, flag in flags:
            p.requires_grad_(flag)


def _pieces(batch: Batch, device: torch.device) -> Iterator[tuple[Batch, float]]:
    """``batch`` on ``device`` in pieces of at most ``PIECE_TOKENS`` tokens (at least one example each),
    each with its share of the batch's examples."""
    examples, length = batch["input_ids"].shape[:2]
    step = max(1, PIECE_TOKENS // length)
    for start in range(0, examples, step):
        piece = {key: value[start : start + step].to(device) for key, value in batch.items()}
        yield piece, piece["input_ids"].shape[0] / examples


def warn_if_scoring_would_not_fit(adapter: ModelAdapter, criterion: str, batches: Sequence[Batch]) -> bool:
    """One warning line when a gradient criterion's backward pass over one piece of the calibration batches
    would need more memory than is available; True when it warned."""
    from prunekit.memory import activation_bytes, warn_if_short

    if criterion not in NEEDS_GRADIENTS or not batches:
        return False
    examples, length = batches[0]["input_ids"].shape[:2]
    tokens = min(examples, max(1, PIECE_TOKENS // length)) * length
    remedy = "lower it with a shorter --calibration-length, --dtype bfloat16, or --importance magnitude (no gradients)"
    return warn_if_short(activation_bytes(adapter.model, tokens, length), f"scoring with --importance {criterion}",
                         remedy)  # fmt: skip


def _loss(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """``model(**batch).loss``; for a causal LM with a plain output head, computed without the logits."""
    head = plain_head(model)
    if head is None or "labels" not in batch:
        return model(**batch).loss
    with head_returns_hidden(head):
        hidden = model(**{key: value for key, value in batch.items() if key != "labels"}).logits
    return causal_lm_loss(hidden, head, batch["labels"])


@unit_criterion("taylor", "head-mask-gradient")
def taylor(adapter: ModelAdapter, batches: Sequence[Batch], seed: int = 0) -> UnitScores:
    model = adapter.model
    device = next(model.parameters()).device
    with _frozen_eval(model), UnitGates(adapter, requires_grad=True) as gates:
        totals = [torch.zeros_like(g) for g in gates.heads + gates.neurons]
        for batch in tqdm(batches, desc="importance (taylor)", leave=False):
            for piece, share in _pieces(batch, device):  # the batch's gradient, summed over its pieces
                (_loss(model, piece) * share).backward()
            for total, gate in zip(totals, gates.heads + gates.neurons):
                total += gate.grad.abs()
                gate.grad = None
    return _normalised(totals, len(gates.heads))


def _normalised(totals: list[torch.Tensor], layers: int) -> UnitScores:
    """Per-layer L2 normalisation of the head scores (the first ``layers``) and the neuron scores."""
    totals = [(t / t.norm().clamp_min(1e-12)).cpu() for t in totals]
    return UnitScores(totals[:layers], totals[layers:])


@unit_criterion("fisher")
def fisher(adapter: ModelAdapter, batches: Sequence[Batch], seed: int = 0) -> UnitScores:
    model = adapter.model
    device = next(model.parameters()).device
    with _frozen_eval(model), UnitGates(adapter) as gates:
        matrices = [torch.zeros(g.shape[-1], g.shape[-1], device=device) for g in gates.heads + gates.neurons]
        for batch in tqdm(batches, desc="importance (fisher)", leave=False):
            for piece, _ in _pieces(batch, device):
                examples = piece["input_ids"].shape[0]
                gates.per_example(examples)
                (_loss(model, piece) * examples).backward()  # the examples' losses summed
                for matrix, gate in zip(matrices, gates.heads + gates.neurons):
                    matrix += gate.grad.T @ gate.grad
    layers = len(gates.heads)
    scores = _normalised([matrix.diagonal() for matrix in matrices], layers)
    matrices = [matrix.cpu() for matrix in matrices]
    scores.interactions = (matrices[:layers], matrices[layers:])
    return scores


@unit_criterion("activation")
@torch.no_grad()
def activation(adapter: ModelAdapter, batches: Sequence[Batch], seed: int = 0) -> UnitScores:
    model = adapter.model
    device = next(model.parameters()).device
    layers = adapter.layers()
    state: dict[str, torch.Tensor] = {}
    sums: dict[tuple[str, int], torch.Tensor] = {}

    def record(kind: str, index: int, unit_size: int):
        def hook(module, args):
            x = args[0].abs().unflatten(-1, (args[0].shape[-1] // unit_size, unit_size)).mean(-1)
            mask = state["mask"].to(x.dtype)[..., None]
            sums[kind, index] = sums.get((kind, index), 0) + (x * mask).sum((0, 1))

        return hook

    handles = [
        layer.attention.output.register_forward_pre_hook(record("heads", i, layer.attention.head_dim))
        for i, layer in enumerate(layers)
    ]
    handles += [layer.ffn.down.register_forward_pre_hook(record("neurons", i, 1)) for i, layer in enumerate(layers)]
    tokens = 0
    try:
        with _frozen_eval(model):
            for batch in tqdm(batches, desc="importance (activation)", leave=False):
                for piece, _ in _pieces(batch, device):
                    state["mask"] = piece["attention_mask"]
                    tokens += int(piece["attention_mask"].sum())
                    _forward(model, piece)
    finally:
        for handle in handles:
            handle.remove()

    def mean(kind: str, index: int, size: int) -> torch.Tensor:
        return (sums[kind, index] / max(tokens, 1)).float().cpu() if (kind, index) in sums else torch.zeros(size)

    return UnitScores(
        [mean("heads", i, layer.attention.num_heads) for i, layer in enumerate(layers)],
        [mean("neurons", i, layer.ffn.num_neurons) for i, layer in enumerate(layers)],
    )


def _mean_loss(model: torch.nn.Module, batches: Sequence[Batch]) -> float:
    device = next(model.parameters()).device
    losses = [sum(float(_loss(model, piece)) * share for piece, share in _pieces(batch, device)) for batch in batches]
    return sum(losses) / len(losses)


def _forward(model: torch.nn.Module, batch: Batch) -> None:
    """A forward pass for its hooks; a causal LM's output head is skipped (no logits are needed)."""
    head = plain_head(model)
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    with head_returns_hidden(head) if head is not None else nullcontext():
        model(**inputs)


@layer_criterion("drop-one")
@torch.no_grad()
def drop_one(adapter: ModelAdapter, batches: Sequence[Batch]) -> torch.Tensor:
    """Loss with layer ``i`` skipped minus the full model's loss (higher = the layer matters more)."""
    model, layer_list = adapter.model, adapter.layer_list()
    layers = list(layer_list)
    with _frozen_eval(model):
        base = _mean_loss(model, batches)
        scores = []
        for i in tqdm(range(len(layers)), desc="importance (drop-one)", leave=False):
            del layer_list[i]
            try:
                scores.append(_mean_loss(model, batches) - base)
            finally:
                layer_list.insert(i, layers[i])
    return torch.tensor(scores)


@layer_criterion("block-influence")
@torch.no_grad()
def block_influence(adapter: ModelAdapter, batches: Sequence[Batch]) -> torch.Tensor:
    """1 − mean cosine similarity between each layer's input and output, over non-padding tokens."""
    model = adapter.model
    device = next(model.parameters()).device
    layers = adapter.layer_list()
    totals = torch.zeros(len(layers), dtype=torch.float64)
    state: dict[str, torch.Tensor] = {}

    def record(index: int):
        def hook(module, args, kwargs, output):
            inputs = args[0] if args else kwargs["hidden_states"]
            outputs = output[0] if isinstance(output, tuple) else output
            cosine = torch.nn.functional.cosine_similarity(inputs.float(), outputs.float(), dim=-1)
            totals[index] += float((cosine * state["mask"]).sum())

        return hook

    handles = [layer.register_forward_hook(record(i), with_kwargs=True) for i, layer in enumerate(layers)]
    tokens = 0
    try:
        with _frozen_eval(model):
            for batch in batches:
                for piece, _ in _pieces(batch, device):
                    state["mask"] = piece["attention_mask"].float()
                    tokens += int(piece["attention_mask"].sum())
                    _forward(model, piece)
    finally:
        for handle in handles:
            handle.remove()
    return (1 - totals / max(tokens, 1)).float()
