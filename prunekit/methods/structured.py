"""Structured pruning: drop layers, then heads and FFN neurons, scored by an importance criterion
and physically removed (see ``prunekit.pruning.surgery``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from prunekit.adapters import ModelAdapter, get_adapter
from prunekit.errors import ConfigError
from prunekit.importance.structured import Batch, score_layers, score_units
from prunekit.methods.speed import LatencyTable
from prunekit.pruning.surgery import drop_layers, prune_heads, prune_neurons
from prunekit.pruning.units import (
    SCOPES,
    check_fraction,
    fraction_for_budget,
    keep_counts,
    latency_counts,
    select_top,
)

if TYPE_CHECKING:
    from prunekit.methods.adaptive import AdaptiveConfig


@dataclass
class StructuredConfig:
    """What to keep. ``heads`` / ``ffn``: fractions of heads / FFN neurons; ``layers``: a layer count;
    ``params_budget``: total parameters to keep, or ``flops_budget``: the fraction of the layers' forward
    FLOPs (at ``flops_seq_len`` tokens) to keep — met by one keep fraction for heads and neurons (those
    not fixed by ``heads`` / ``ffn``)."""

    importance: str = "taylor"
    heads: float | None = None
    ffn: float | None = None
    layers: int | None = None
    layer_importance: str = "drop-one"
    scope: str = "global"
    params_budget: int | None = None
    flops_budget: float | None = None
    flops_seq_len: int = 128
    min_heads: int = 1
    min_ffn: int = 1
    round_to: int = 1
    seed: int = 0
    iterations: int = 1  # >1: prune in that many steps, re-scoring the smaller model before each
    latency: LatencyTable | None = None  # measured per-width latency: allocate for the most score per time

    def validate(self, num_layers: int) -> None:
        check_fraction(self.heads, "--heads")
        check_fraction(self.ffn, "--ffn")
        if self.scope not in SCOPES:
            raise ConfigError(f"--scope {self.scope}: expected one of {', '.join(SCOPES)}")
        if self.layers is not None and not 1 <= self.layers <= num_layers:
            raise ConfigError(f"--layers {self.layers}: the model has {num_layers} layers; keep 1..{num_layers}")
        check_budgets(self.heads, self.ffn, self.params_budget, self.flops_budget)
        if self.iterations < 1:
            raise ConfigError(f"--iterations {self.iterations}: expected a positive number of pruning steps")
        if self.round_to < 1 or self.min_heads < 0 or self.min_ffn < 0:
            raise ConfigError("--round-to must be >= 1 and --min-heads / --min-ffn >= 0")
        if not any(v is not None for v in (self.heads, self.ffn, self.layers, self.params_budget, self.flops_budget)):
            raise ConfigError("nothing to prune: pass --heads, --ffn, --layers, --params-budget or --flops-budget")

    @property
    def prunes_units(self) -> bool:
        return any(v is not None for v in (self.heads, self.ffn, self.params_budget, self.flops_budget))


def check_budgets(heads: float | None, ffn: float | None, params: int | None, flops: float | None) -> None:
    """A parameter or a FLOPs budget (not both), with ``heads`` or ``ffn`` left for it to decide."""
    if params is not None and params < 1:
        raise ConfigError(f"--params-budget {params}: expected a positive parameter count")
    if flops is not None and not 0 < flops <= 1:
        raise ConfigError(f"--flops-budget {flops:g}: expected a fraction of the dense FLOPs in (0, 1]")
    if params is not None and flops is not None:
        raise ConfigError("--params-budget and --flops-budget: pass one budget")
    budget = "--params-budget" if params is not None else "--flops-budget" if flops is not None else None
    if budget and heads is not None and ffn is not None:
        raise ConfigError(f"{budget}: leave --heads or --ffn unset for the budget to decide")


def _linear_params(rows: int, cols: int, linear: nn.Linear) -> int:
    return rows * cols + (rows if linear.bias is not None else 0)


def params_after(adapter: ModelAdapter, head_counts: Sequence[int], neuron_counts: Sequence[int]) -> int:
    """Parameter count once each layer keeps ``head_counts[l]`` heads and ``neuron_counts[l]`` neurons."""
    total = sum(p.numel() for p in {id(p): p for p in adapter.model.parameters()}.values())  # tied: once
    for layer, heads, neurons in zip(adapter.layers(), head_counts, neuron_counts):
        attn, ffn = layer.attention, layer.ffn
        kv_heads = attn.kv_heads_kept(heads)
        hidden, d = attn.query.in_features, attn.head_dim
        linears = [attn.query, attn.key, attn.value, attn.output, ffn.up, ffn.down] + ([ffn.gate] if ffn.gate else [])
        total -= sum(p.numel() for linear in linears for p in linear.parameters())
        total += _linear_params(heads * d, hidden, attn.query) + _linear_params(hidden, heads * d, attn.output)
        total += _linear_params(kv_heads * d, hidden, attn.key) + _linear_params(kv_heads * d, hidden, attn.value)
        total += _linear_params(neurons, hidden, ffn.up) + _linear_params(hidden, neurons, ffn.down)
        if ffn.gate is not None:
            total += _linear_params(neurons, hidden, ffn.gate)
    return total


def flops_after(adapter: ModelAdapter, head_counts: Sequence[int], neuron_counts: Sequence[int], seq_len: int) -> int:
    """Forward FLOPs of the transformer layers on one sequence of ``seq_len`` tokens once each layer keeps
    ``head_counts[l]`` heads and ``neuron_counts[l]`` neurons: two per multiply-add, in the projections
    and in attention's scores and context (embeddings, norms and the head are left out)."""
    total = 0
    for layer, heads, neurons in zip(adapter.layers(), head_counts, neuron_counts):
        attn, ffn = layer.attention, layer.ffn
        kv_heads = attn.kv_heads_kept(heads)
        hidden, d = attn.query.in_features, attn.head_dim
        projections = hidden * d * (2 * heads + 2 * kv_heads) + hidden * neurons * (3 if ffn.gate else 2)
        total += 2 * seq_len * projections + 4 * seq_len * seq_len * heads * d
    return total


def budget_fraction(
    adapter: ModelAdapter,
    counts_at: Callable[[float], tuple[list[int], list[int]]],
    params_budget: int | None,
    flops_budget: float | None,
    seq_len: int,
) -> float | None:
    """The keep fraction that meets the parameter or FLOPs budget, given ``counts_at(f)`` (heads and neurons
    per layer at keep fraction ``f``); None without a budget. FLOPs are relative to the model as it is."""
    if params_budget is not None:
        flag = f"--params-budget {params_budget:,}"
        return fraction_for_budget(lambda f: params_after(adapter, *counts_at(f)), params_budget, flag, "parameters")
    if flops_budget is None:
        return None
    layers = adapter.layers()
    now = [layer.attention.num_heads for layer in layers], [layer.ffn.num_neurons for layer in layers]
    allowed = int(flops_budget * flops_after(adapter, *now, seq_len))
    return fraction_for_budget(
        lambda f: flops_after(adapter, *counts_at(f), seq_len), allowed, f"--flops-budget {flops_budget:g}", "FLOPs"
    )


def prune_structured(model: nn.Module, config: StructuredConfig, batches: Sequence[Batch] = ()) -> dict:
    """Prune ``model`` in place; returns what was kept (original layer indices, per-layer structure).

    The model's config still describes the parent's widths: save it with
    ``prunekit.save_pruned(model, folder)``, which writes a config that matches the new shapes.
    """
    adapter = get_adapter(model)
    num_layers = len(adapter.layer_list())
    config.validate(num_layers)
    kept_layers = list(range(num_layers))
    report: dict = {}
    if config.layers is not None and config.layers < num_layers:
        layer_scores = score_layers(config.layer_importance, adapter, batches)
        kept_layers = sorted(torch.topk(layer_scores, config.layers).indices.tolist())
        report["layer_scores"] = [round(float(s), 6) for s in layer_scores]
        drop_layers(adapter, kept_layers)

    if config.prunes_units:
        layers = adapter.layers()
        original = ([layer.attention.num_heads for layer in layers], [layer.ffn.num_neurons for layer in layers])
        heads, ffn = config.heads, config.ffn
        scores = score_units(config.importance, adapter, batches, config.seed)
        fraction = budget_fraction(
            adapter,
            lambda f: _counts(adapter, config, scores, heads, ffn, f),
            config.params_budget,
            config.flops_budget,
            config.flops_seq_len,
        )
        if fraction is not None:
            heads = heads if heads is not None else fraction
            ffn = ffn if ffn is not None else fraction
            report["budget_keep_fraction"] = round(fraction, 6)
        for step in range(1, config.iterations + 1):
            # iterative: prune a share, re-score the smaller model, prune more (the last step hits the target)
            if step > 1:
                scores = score_units(config.importance, adapter, batches, config.seed)
            progress = step / config.iterations
            now = [None if t is None else 1 - progress * (1 - t) for t in (heads, ffn)]
            head_counts, neuron_counts = _counts(adapter, config, scores, *_of_current(now, original, layers))
            prune_heads(adapter, dict(enumerate(select_top(scores.heads, head_counts, adapter.head_groups()))))
            prune_neurons(adapter, dict(enumerate(select_top(scores.neurons, neuron_counts))))
            layers = adapter.layers()
        if config.iterations > 1:
            report["iterations"] = config.iterations
    return {"kept_layers": kept_layers, "structure": adapter.describe(), **report}


def _of_current(fractions, original, layers) -> list[float | None]:
    """Keep fractions of the *original* heads / neurons as fractions of what the model has now."""
    current = ([layer.attention.num_heads for layer in layers], [layer.ffn.num_neurons for layer in layers])
    return [
        None if f is None else min(1.0, f * sum(before) / max(sum(now), 1))
        for f, before, now in zip(fractions, original, current)
    ]


def _counts(adapter, config: StructuredConfig, scores, heads: float | None, ffn: float | None, fallback=None):
    """Heads and neurons each layer keeps for keep fractions ``heads`` / ``ffn`` (``fallback`` for
    those unset, as the parameter-budget search needs). Iterative pruning meets totals exactly at every
    step, so rounding does not accumulate (one-shot keeps its recorded behaviour)."""
    exact = config.iterations > 1
    heads = heads if heads is not None else fallback
    ffn = ffn if ffn is not None else fallback
    return allocate(scores.heads, scores.neurons, heads, ffn, config, adapter.head_groups(), exact)


def allocate(
    head_scores: Sequence[torch.Tensor],
    neuron_scores: Sequence[torch.Tensor],
    heads: float | None,
    ffn: float | None,
    config: StructuredConfig | AdaptiveConfig,
    kv_groups: Sequence[int],
    exact: bool = False,
) -> tuple[list[int], list[int]]:
    """Heads and neurons each layer keeps for keep fractions ``heads`` / ``ffn`` (None: all of them):
    for the most score within the measured latency of the uniform widths when ``config.latency`` is
    set, else ranked across layers or the same in each, per ``config.scope``."""
    head_counts, neuron_counts = [len(s) for s in head_scores], [len(s) for s in neuron_scores]
    table = config.latency
    if heads is not None and table is not None:
        head_counts = latency_counts(head_scores, heads, table.heads, config.min_heads, kv_groups)
    elif heads is not None:
        head_counts = keep_counts(head_scores, heads, config.scope, config.min_heads, kv_groups, exact)
    if ffn is not None and table is not None:
        neuron_counts = latency_counts(neuron_scores, ffn, table.ffn, config.min_ffn, config.round_to)
    elif ffn is not None:
        neuron_counts = keep_counts(neuron_scores, ffn, config.scope, config.min_ffn, config.round_to, exact)
    return head_counts, neuron_counts
