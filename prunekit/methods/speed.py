"""Latency on this machine, measured rather than predicted — FLOPs are a poor guide on CPUs, where
embeddings, layer norms and softmax do not shrink with the widths, and some widths run faster than
narrower ones:

- latency targets (``--speedup 2``): the keep fraction of heads and FFN neurons that makes the model
  that many times faster, found by timing pruned copies of it and checked again on the final model;
- ``--latency-aware`` allocation: the latency of every width a layer may keep (``LatencyTable``), so
  widths can differ across layers only where that costs no time (``pruning.units.latency_counts``).
"""

from __future__ import annotations

import copy
import itertools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from prunekit.adapters import get_adapter
from prunekit.errors import ConfigError
from prunekit.evaluation import make_inputs, measure_latency
from prunekit.evaluation.bench import REPEATS, SHAPE, THREADS
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
    groups = adapter.head_groups()
    head_counts = keep_counts(heads, fraction, "uniform", 1, groups)
    neuron_counts = keep_counts(neurons, fraction, "uniform", 1, round_to)
    prune_heads(adapter, dict(enumerate(select_top(heads, head_counts, groups))))
    prune_neurons(adapter, dict(enumerate(select_top(neurons, neuron_counts))))
    return pruned


def measure_speedups(
    model: PreTrainedModel,
    candidates: Sequence[PreTrainedModel],
    shapes: Sequence[tuple[int, int]] = (SHAPE,),
    threads: int = THREADS,
    repeats: int = REPEATS,
) -> list[list[float]]:
    """``[shape][candidate]`` latency ratios (dense / candidate, > 1 is faster), each shape timed
    interleaved in one run."""
    ratios = []
    for batch_size, seq_len in shapes:
        models = [model, *candidates]
        inputs = [make_inputs(m, batch_size, seq_len) for m in models]
        stats = measure_latency(models, inputs, threads=threads, repeats=repeats)
        ratios.append([round(stats[0].median / s.median, 4) for s in stats[1:]])
    return ratios


def keep_fraction_for_speedup(
    model: PreTrainedModel,
    speedup: float,
    shape: tuple[int, int] = SHAPE,
    round_to: int = 32,
    threads: int = THREADS,
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


@dataclass
class LatencyTable:
    """Latency of the model, relative to its dense self, with every layer keeping ``heads[h]`` heads
    (FFN whole) or ``ffn[n]`` neurons (heads whole), timed at batch x length ``shape``. The rest of the
    model adds the same to every entry, so per-layer sums compare allocations correctly."""

    heads: dict[int, float]
    ffn: dict[int, float]
    shape: tuple[int, int]

    @classmethod
    def from_dict(cls, saved: dict) -> LatencyTable:
        """From its JSON form (where the counts became strings)."""
        return cls(
            {int(k): v for k, v in saved["heads"].items()},
            {int(k): v for k, v in saved["ffn"].items()},
            tuple(saved["shape"]),
        )


def width_copy(model: PreTrainedModel, heads: int | None = None, neurons: int | None = None) -> PreTrainedModel:
    """A copy of ``model`` with ``heads`` heads and / or ``neurons`` FFN neurons in every layer."""
    pruned = copy.deepcopy(model)
    adapter = get_adapter(pruned)
    layers = adapter.layers()
    if heads is not None:
        groups = adapter.head_groups()
        scores = [torch.zeros(layer.attention.num_heads) for layer in layers]
        prune_heads(adapter, dict(enumerate(select_top(scores, [heads] * len(layers), groups))))
    if neurons is not None:
        prune_neurons(adapter, {i: list(range(neurons)) for i in range(len(layers))})
    return pruned


def measure_latency_table(
    model: PreTrainedModel,
    shape: tuple[int, int] = SHAPE,
    round_to: int = 32,
    threads: int = THREADS,
    repeats: int = REPEATS,
) -> LatencyTable:
    """Time ``model`` with every head count its layers may keep (multiples of the KV groups) and every FFN
    width (multiples of ``round_to``, and the whole width), all copies interleaved with the dense model in
    one run (copies timed in separate runs drifted apart by up to 15 % here), as latency relative to it.
    A wider layer is never recorded as faster than a narrower one (monotone fit): the allocation would
    otherwise chase timer noise."""
    check_single_process("--latency-aware")
    layer = get_adapter(model).layers()[0]
    group = layer.attention.head_groups
    head_counts = list(range(group, layer.attention.num_heads + 1, group))
    widths = sorted({*range(round_to, layer.ffn.num_neurons, round_to), layer.ffn.num_neurons})
    copies = [width_copy(model, heads=h) for h in head_counts] + [width_copy(model, neurons=n) for n in widths]
    ratios = measure_speedups(model, copies, [shape], threads, repeats)[0]
    latency = [1 / ratio for ratio in ratios]
    heads = dict(zip(head_counts, _monotone(latency[: len(head_counts)])))
    return LatencyTable(heads, dict(zip(widths, _monotone(latency[len(head_counts) :]))), shape)


def latency_table_for(model: PreTrainedModel, round_to: int, saved: str | None = None) -> LatencyTable:
    """The per-width latency table of ``model``: read from ``saved`` (a JSON file of an earlier
    measurement: a resumed run allocates from the timings it made first), else measured now at the
    timing shape (its length capped at the model's positions)."""
    if saved is None:
        from prunekit.models import max_positions

        length = min(SHAPE[1], max_positions(model.config) or SHAPE[1])
        return measure_latency_table(model, (SHAPE[0], length), round_to)
    from prunekit.io import read_json

    return LatencyTable.from_dict(read_json(saved, "a latency table (--latency-table)"))


def _monotone(values: Sequence[float]) -> list[float]:
    """The closest non-decreasing sequence in least squares (pool adjacent violators), rounded."""
    blocks: list[list[float]] = []  # [mean, size]
    for value in values:
        blocks.append([value, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            (mean_a, size_a), (mean_b, size_b) = blocks[-2], blocks.pop()
            blocks[-1] = [(mean_a * size_a + mean_b * size_b) / (size_a + size_b), size_a + size_b]
    return [round(mean, 4) for mean, size in blocks for _ in range(int(size))]


def check_single_process(flag: str) -> None:
    """Timings differ between processes, so choices made from them could differ too: one process only."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(
            f"{flag} times the model in each process, which could disagree: run it in one process, "
            "or pass the widths it chose (--heads / --ffn) under torchrun"
        )
