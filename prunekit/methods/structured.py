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
from prunekit.importance.structured import (
    LAYER_CRITERIA,
    UNIT_CRITERIA,
    Batch,
    score_layers,
    score_units,
    warn_if_scoring_would_not_fit,
)
from prunekit.methods.magnitude import MagnitudeConfig
from prunekit.methods.reconstruct import prune_and_reconstruct
from prunekit.methods.speed import LatencyTable
from prunekit.options import (
    check_options,
    count,
    option,
    param_count,
    positive_int,
    real,
    same_option,
    seed_option,
    unused,
)
from prunekit.pruning.schedules import keep_fraction_at
from prunekit.pruning.surgery import drop_layers, prune_heads, prune_neurons
from prunekit.pruning.units import fraction_for_budget, keep_counts, latency_counts, rearrange, select_top

if TYPE_CHECKING:
    from prunekit.methods.adaptive import AdaptiveConfig


keep_fraction = real(0, 1, low_open=True)  # a fraction of units to keep: (0, 1]


@dataclass
class UnitTargets:
    """Which attention heads and FFN neurons structured pruning keeps (one-shot and adaptive): keep
    fractions ``heads`` / ``ffn``, or a parameter or FLOPs budget (at ``flops_seq_len`` tokens, the data
    flag --max-length) met by one keep fraction for those not fixed; each ``option`` field is a flag."""

    heads: float | None = option(None, "fraction of attention heads to keep, e.g. 0.5", parse=keep_fraction)
    ffn: float | None = option(None, "fraction of FFN neurons to keep, e.g. 0.5", parse=keep_fraction)
    params_budget: int | None = option(
        None, "total parameters to keep (e.g. 15M): one keep fraction for heads and neurons is solved for",
        parse=param_count,
    )  # fmt: skip
    flops_budget: float | None = option(
        None, "fraction of the layers' forward FLOPs to keep at --max-length tokens, e.g. 0.5", parse=keep_fraction
    )
    scope: str | None = same_option(MagnitudeConfig, "scope")  # units: layer is kept as "uniform"
    min_heads: int = option(1, "heads every layer keeps at least (0 allows none)", parse=count)
    min_ffn: int = option(1, "FFN neurons every layer keeps at least", parse=count)
    latency_aware: bool = option(
        False,
        "time every width a layer may keep (batch 32 x 128, here) and let widths differ across layers "
        "only where the scores gain and it costs no time over uniform widths",
        switch=True,
    )
    latency_table: str | None = option(
        None, "with --latency-aware: a table measured before (JSON) to allocate from instead of timing anew"
    )
    round_to: int = option(32, "kept FFN widths a multiple of this (1: any width)", parse=positive_int)
    flops_seq_len: int = 128
    latency: LatencyTable | None = None  # measured per-width latency: allocate for the most score per time

    def __post_init__(self) -> None:
        check_options(self)
        if self.scope == "row":
            raise ConfigError("--scope row: heads and neurons compete across layers (global) or within each (layer)")
        self.scope = "uniform" if self.scope in ("layer", "uniform") else "global"
        check_budgets(self.heads, self.ffn, self.params_budget, self.flops_budget)

    def ineffective(self) -> dict[str, str]:
        return {} if self.latency_aware else unused(["latency_table"], "without --latency-aware")


@dataclass
class StructuredConfig(UnitTargets):
    """One-shot structured pruning: ``UnitTargets`` plus ``layers`` (a layer count to keep), the criteria,
    FFN width rounding and iterations."""

    importance: str = option("taylor", "score for heads/neurons", choices=sorted(UNIT_CRITERIA))
    layers: int | None = option(None, "number of transformer layers to keep", parse=positive_int)
    layer_importance: str = option("drop-one", "score for --layers", choices=sorted(LAYER_CRITERIA))
    iterations: int = option(
        1, "prune in N steps, re-scoring the smaller model before each (1: one-shot)", parse=positive_int
    )
    seed: int = seed_option()
    reconstruct: bool = option(
        False,
        "refit each pruned layer's output projection (attention output, FFN down) by least squares on the "
        "calibration data, layer by layer, so the kept units reproduce the dense layer's output (its bias too); "
        "no training",
        switch=True,
    )
    rearrange: bool = option(
        False,
        "with --importance fisher: refine each layer's kept units by swaps that lower the loss the units' "
        "Fisher matrix predicts (Kwon et al.'s mask rearrangement; KV groups keep their counts)",
        switch=True,
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rearrange and self.importance != "fisher":
            raise ConfigError(
                f"--rearrange uses the Fisher matrices of the unit masks: pass --importance fisher "
                f"(not {self.importance})"
            )

    def validate(self, num_layers: int) -> None:
        if self.layers is not None and not 1 <= self.layers <= num_layers:
            raise ConfigError(f"--layers {self.layers}: the model has {num_layers} layers; keep 1..{num_layers}")
        if not any(v is not None for v in (self.heads, self.ffn, self.layers, self.params_budget, self.flops_budget)):
            raise ConfigError("nothing to prune: pass --heads, --ffn, --layers, --params-budget or --flops-budget")

    def ineffective(self) -> dict[str, str]:
        ignored = super().ineffective()
        if self.importance != "random":
            ignored.update(unused(["seed"], f"with --importance {self.importance} (only random draws)"))
        if self.layers is None:
            ignored.update(unused(["layer_importance"], "without --layers"))
        if not self.prunes_units:
            units = ("scope", "min_heads", "min_ffn", "round_to", "reconstruct", "rearrange")
            ignored.update(unused(units, "without --heads, --ffn or a budget (only --layers)"))
        return ignored

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


def keep_fractions(
    adapter: ModelAdapter,
    targets: UnitTargets,
    counts_at: Callable[[float | None, float | None], tuple[list[int], list[int]]],
) -> tuple[float | None, float | None, float | None]:
    """``(heads, ffn, fraction)``: the keep fractions of heads and neurons — those ``targets`` fix, the
    budget's one keep ``fraction`` for the others (None without a budget) — given ``counts_at(heads, ffn)``
    (units kept per layer at those fractions). One-shot and adaptive pruning both resolve targets here."""

    def filled(fraction: float | None) -> tuple[float | None, float | None]:
        return (targets.heads if targets.heads is not None else fraction,
                targets.ffn if targets.ffn is not None else fraction)  # fmt: skip

    fraction = budget_fraction(adapter, lambda f: counts_at(*filled(f)), targets.params_budget,
                               targets.flops_budget, targets.flops_seq_len)  # fmt: skip
    return (*filled(fraction), fraction)


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
        if config.reconstruct and not batches:
            raise ConfigError("--reconstruct refits the layers on calibration data: pass --data")
        layers = adapter.layers()
        original = ([layer.attention.num_heads for layer in layers], [layer.ffn.num_neurons for layer in layers])
        warn_if_scoring_would_not_fit(adapter, config.importance, batches)
        scores = score_units(config.importance, adapter, batches, config.seed)
        heads, ffn, fraction = keep_fractions(adapter, config, lambda h, f: _counts(adapter, config, scores, h, f))
        if fraction is not None:
            report["budget_keep_fraction"] = round(fraction, 6)
        for step in range(1, config.iterations + 1):
            # iterative: prune a share, re-score the smaller model, prune more (the last step hits the target)
            if step > 1:
                scores = score_units(config.importance, adapter, batches, config.seed)
            now = [keep_fraction_at(target, step / config.iterations) for target in (heads, ffn)]
            head_counts, neuron_counts = _counts(adapter, config, scores, *_of_current(now, original, layers))
            kept_heads = dict(enumerate(select_top(scores.heads, head_counts, adapter.head_groups())))
            kept_neurons = dict(enumerate(select_top(scores.neurons, neuron_counts)))
            if config.rearrange:
                kept_heads, kept_neurons, report["rearranged"] = _rearranged(adapter, scores, kept_heads, kept_neurons)
            if config.reconstruct:
                report["reconstruction"] = prune_and_reconstruct(model, adapter, kept_heads, kept_neurons, batches)
            else:
                prune_heads(adapter, kept_heads)
                prune_neurons(adapter, kept_neurons)
            layers = adapter.layers()
        if config.iterations > 1:
            report["iterations"] = config.iterations
    return {"kept_layers": kept_layers, "structure": adapter.describe(), **report}


def _rearranged(adapter: ModelAdapter, scores, kept_heads: dict, kept_neurons: dict) -> tuple[dict, dict, dict]:
    """``rearrange`` applied to every layer's kept heads (within KV groups) and neurons, and how many units
    each moved (heads, neurons: one count per layer)."""
    head_fisher, neuron_fisher = scores.interactions
    groups = adapter.head_groups()
    heads = {i: rearrange(kept, head_fisher[i], groups[i]) for i, kept in kept_heads.items()}
    neurons = {i: rearrange(kept, neuron_fisher[i]) for i, kept in kept_neurons.items()}
    moved = {
        "heads": [len(set(heads[i]) - set(kept)) for i, kept in kept_heads.items()],
        "neurons": [len(set(neurons[i]) - set(kept)) for i, kept in kept_neurons.items()],
    }
    return heads, neurons, moved


def _of_current(fractions, original, layers) -> list[float | None]:
    """Keep fractions of the *original* heads / neurons as fractions of what the model has now."""
    current = ([layer.attention.num_heads for layer in layers], [layer.ffn.num_neurons for layer in layers])
    return [
        None if f is None else min(1.0, f * sum(before) / max(sum(now), 1))
        for f, before, now in zip(fractions, original, current)
    ]


def _counts(adapter, config: StructuredConfig, scores, heads: float | None, ffn: float | None):
    """Heads and neurons each layer keeps for keep fractions ``heads`` / ``ffn``. Iterative pruning meets
    totals exactly at every step, so rounding does not accumulate (one-shot keeps its recorded behaviour)."""
    exact = config.iterations > 1
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
