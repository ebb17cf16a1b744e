"""Latency targets (``--speedup 2``): the keep fraction of heads and FFN neurons that makes the model
that many times faster *on this machine*, found by timing pruned copies of it — FLOPs are a poor
guide on CPUs, where embeddings, layer norms and softmax do not shrink with the widths — and checked
again by measurement on the final model."""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Sequence

import torch
from transformers import PreTrainedModel

from prunekit.adapters import get_adapter
from prunekit.errors import ConfigError
from prunekit.evaluation import make_inputs, measure_latency
from prunekit.pruning.surgery import prune_heads, prune_neurons
from prunekit.pruning.units import keep_counts, select_top

GRID = (0.8, 0.65, 0.5, 0.4, 0.3, 0.2, 0.12)  # keep fractions timed to find the one for a target


def uniform_copy(model: PreTrainedModel, fraction: float, round_to: int = 32) -> PreTrainedModel:
    """A copy of ``model`` keeping ``fraction`` of the heads and FFN neurons in every layer (which
    units does not matter for timing), FFN widths a multiple of ``round_to``."""
    pruned = copy.deepcopy(model)
    adapter = get_adapter(pruned)
    layers = adapter.layers()
    heads = [torch.zeros(layer.attention.num_heads) for layer in layers]
    neurons = [torch.zeros(layer.ffn.num_neurons) for layer in layers]
    groups = [layer.attention.num_kv_heads if layer.attention.heads_per_kv_group > 1 else 1 for layer in layers]
    head_counts = keep_counts(heads, fraction, "uniform", 1, groups)
    neuron_counts = keep_counts(neurons, fraction, "uniform", 1, round_to)
    prune_heads(adapter, dict(enumerate(select_top(heads, head_counts, groups))))
    prune_neurons(adapter, dict(enumerate(select_top(neurons, neuron_counts))))
    return pruned


def measure_speedups(
    model: PreTrainedModel,
    candidates: Sequence[PreTrainedModel],
    shapes: Sequence[tuple[int, int]] = ((32, 128),),
    threads: int | None = None,
    repeats: int = 10,
) -> list[list[float]]:
    """``[shape][candidate]`` latency ratios (dense / candidate, > 1 is faster), each shape timed
    interleaved in one run."""
    threads = threads or torch.get_num_threads()
    ratios = []
    for batch_size, seq_len in shapes:
        models = [model, *candidates]
        inputs = [make_inputs(m, batch_size, seq_len) for m in models]
        stats = measure_latency(models, inputs, threads=threads, warmup=2, repeats=repeats)
        ratios.append([round(stats[0].median / s.median, 4) for s in stats[1:]])
    return ratios


def keep_fraction_for_speedup(
    model: PreTrainedModel,
    speedup: float,
    shape: tuple[int, int] = (32, 128),
    round_to: int = 32,
    threads: int | None = None,
) -> tuple[float, dict[float, float]]:
    """The keep fraction (heads and neurons alike) whose uniform pruning is ``speedup`` times faster,
    interpolated (in log-speed) between timed fractions; returns it and the timings ``{fraction: ratio}``."""
    if speedup <= 1:
        raise ConfigError(f"--speedup {speedup:g}: expected a speed-up above 1, e.g. 2")
    copies = [uniform_copy(model, f, round_to) for f in GRID]
    measured = dict(zip(GRID, measure_speedups(model, copies, [shape], threads)[0]))
    points = [(1.0, 1.0), *sorted(measured.items(), reverse=True)]
    for (f_hi, r_lo), (f_lo, r_hi) in itertools.pairwise(points):
        if r_lo <= speedup <= r_hi:
            t = (math.log(speedup) - math.log(r_lo)) / max(math.log(r_hi) - math.log(r_lo), 1e-9)
            return round(f_hi - t * (f_hi - f_lo), 4), measured
    fastest = max(measured.values())
    if speedup > fastest:
        raise ConfigError(
            f"--speedup {speedup:g}: keeping {min(GRID):.0%} of the heads and FFN neurons is only {fastest:.2f}x "
            f"faster at batch {shape[0]} x {shape[1]} on this machine; ask for less"
        )
    # timing noise made the ratios non-monotonic around the target: take the first fraction reaching it
    return next(f for f, r in sorted(measured.items(), reverse=True) if r >= speedup), measured
