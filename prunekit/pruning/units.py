"""Which heads and neurons to keep, from per-layer scores: counts per layer, then the units.

``keep_counts`` turns a keep fraction into per-layer counts — ranked across layers (``global``, so
layers end up with different widths) or the same fraction in every layer (``uniform``) — then applies
the guards: a minimum per layer (so nothing reaches zero width by accident) and rounding to a
multiple (hardware-friendly shapes; with grouped-query attention, a multiple of the KV groups so
every group keeps the same number of query heads).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from prunekit.errors import ConfigError

SCOPES = ("global", "uniform")


def _round_count(count: int, size: int, minimum: int, multiple: int) -> int:
    count = max(count, min(minimum, size))
    if multiple > 1 and count % multiple:
        lower = count - count % multiple
        count = lower + multiple if (count - lower) * 2 >= multiple or lower < minimum else lower
    return min(count, size)


def keep_counts(
    scores: Sequence[torch.Tensor],
    fraction: float,
    scope: str = "global",
    minimum: int = 1,
    multiples: Sequence[int] | int = 1,
    exact: bool = False,
) -> list[int]:
    """How many units each layer keeps for a keep ``fraction`` of all units.

    Rounding each layer to its multiple can miss the total; with ``exact`` (global scope) whole blocks
    of a multiple are then moved — the weakest kept block dropped, or the strongest pruned one added —
    until the total is as close to the target as the multiples allow, without exceeding it."""
    if scope not in SCOPES:
        raise ConfigError(f"--scope {scope}: expected one of {', '.join(SCOPES)}")
    sizes = [len(s) for s in scores]
    multiples = [multiples] * len(sizes) if isinstance(multiples, int) else list(multiples)
    if scope == "uniform":
        raw = [round(fraction * size) for size in sizes]
    else:
        flat = torch.cat([s.float() for s in scores])
        top = torch.topk(flat, round(fraction * len(flat))).indices
        layer_of = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
        raw = torch.bincount(layer_of[top], minlength=len(sizes)).tolist()
    counts = [_round_count(c, size, minimum, m) for c, size, m in zip(raw, sizes, multiples)]
    if exact and scope == "global":
        counts = _fit_total(scores, counts, round(fraction * sum(sizes)), minimum, multiples)
    return counts


def latency_counts(
    scores: Sequence[torch.Tensor],
    fraction: float,
    costs: Mapping[int, float],
    minimum: int = 1,
    multiple: int = 1,
    resolution: int = 2000,
) -> list[int]:
    """Per-layer counts keeping the most score for at most the measured latency of keeping ``fraction``
    of every layer (the uniform widths): ``costs[count]`` is the latency of a layer keeping ``count``
    units (only those counts are candidates). Widths differ across layers only where the scores gain
    from it *and* the measurements say it costs no more time — a knapsack solved exactly by dynamic
    programming over latency in ``resolution`` steps. Pruned units (score -inf) are never kept."""
    uniform = keep_counts(scores, fraction, "uniform", minimum, multiple)
    options = sorted(costs)
    uniform = [min((o for o in options if o >= c), default=options[-1]) for c in uniform]
    scale = resolution / sum(costs[c] for c in uniform)
    steps = {count: round(cost * scale) for count, cost in costs.items()}  # latency in whole steps
    budget = sum(steps[c] for c in uniform)
    best = np.zeros(budget + 1)  # the most score kept within each latency, over the layers so far
    choices = []
    for layer_scores in scores:
        prefix = np.concatenate([[0.0], np.cumsum(torch.sort(layer_scores.float(), descending=True).values.numpy())])
        new, choice = np.full(budget + 1, -np.inf), np.zeros(budget + 1, dtype=int)
        for count in options:
            usable = min(minimum, len(layer_scores)) <= count <= len(layer_scores) and np.isfinite(prefix[count])
            if not usable or steps[count] > budget:
                continue
            candidate = np.full(budget + 1, -np.inf)
            candidate[steps[count] :] = best[: budget + 1 - steps[count]] + prefix[count]
            better = candidate > new
            new[better], choice[better] = candidate[better], count
        if not np.isfinite(new[budget]):
            return uniform  # no width of this layer fits next to the others: keep the uniform widths
        best = new
        choices.append(choice)
    counts, left = [], budget
    for choice in reversed(choices):
        counts.append(int(choice[left]))
        left -= steps[counts[-1]]
    return counts[::-1]


def _fit_total(
    scores: Sequence[torch.Tensor], counts: list[int], target: int, minimum: int, multiples: Sequence[int]
) -> list[int]:
    ranked = [torch.sort(s.float(), descending=True).values for s in scores]

    def block(layer: int, start: int) -> float:  # mean score of units start .. start + multiple
        return ranked[layer][start : start + multiples[layer]].mean().item()

    counts = list(counts)
    while sum(counts) > target:
        removable = [i for i, c in enumerate(counts) if c - multiples[i] >= min(minimum, len(ranked[i]))]
        if not removable:
            break
        weakest = min(removable, key=lambda i: block(i, counts[i] - multiples[i]))
        counts[weakest] -= multiples[weakest]
    while True:
        addable = [
            i
            for i, c in enumerate(counts)
            if c + multiples[i] <= len(ranked[i])
            and sum(counts) + multiples[i] <= target
            and torch.isfinite(ranked[i][c : c + multiples[i]]).all()  # never revive a pruned unit
        ]
        if not addable:
            return counts
        strongest = max(addable, key=lambda i: block(i, counts[i]))
        counts[strongest] += multiples[strongest]


def select_top(
    scores: Sequence[torch.Tensor], counts: Sequence[int], groups: Sequence[int] | int = 1
) -> list[list[int]]:
    """The ``counts[l]`` best units of each layer; with ``groups[l] > 1`` the count is split evenly
    over that many consecutive groups and the best units are taken within each group."""
    groups = [groups] * len(scores) if isinstance(groups, int) else list(groups)
    kept = []
    for layer_scores, count, group_count in zip(scores, counts, groups):
        if group_count <= 1:
            kept.append(sorted(torch.topk(layer_scores, count).indices.tolist()))
            continue
        if count % group_count:
            raise ConfigError(f"cannot spread {count} heads evenly over {group_count} KV groups")
        per_group = count // group_count
        grouped = layer_scores.view(group_count, -1)
        offsets = torch.arange(group_count)[:, None] * grouped.shape[1]
        chosen = torch.topk(grouped, per_group, dim=1).indices + offsets
        kept.append(sorted(chosen.flatten().tolist()))
    return kept


def rearrange(kept: Sequence[int], fisher: torch.Tensor, groups: int = 1) -> list[int]:
    """Kwon et al.'s mask rearrangement: with the layer's loss increase modelled as zᵀ F z (z: 1 for each
    removed unit, F: the units' Fisher matrix), swap one kept unit for one removed unit at a time, the
    swap that lowers it most, until none does; with ``groups`` > 1 only within a group (KV groups keep
    their counts). Returns the kept units, sorted."""
    size = fisher.shape[0]
    if len(kept) in (0, size):
        return sorted(kept)
    fisher = fisher.double()
    diagonal = fisher.diagonal()
    removed = torch.ones(size, dtype=torch.float64)
    removed[list(kept)] = 0
    group = torch.arange(size) // (size // groups)
    for _ in range(size * size):  # each swap lowers the objective: this bound is never reached
        pull = fisher @ removed  # (F z)_u
        out = removed.nonzero().flatten()  # candidates to keep again
        back = (removed == 0).nonzero().flatten()  # candidates to remove
        # z' = z - e_p + e_q: Δ = -2 (Fz)_p + F_pp + 2 (Fz)_q + F_qq - 2 F_pq
        delta = (-2 * pull[out] + diagonal[out])[:, None] + (2 * pull[back] + diagonal[back])[None, :]
        delta -= 2 * fisher[out][:, back]
        delta[group[out][:, None] != group[back][None, :]] = float("inf")
        best = int(delta.argmin())
        if float(delta.flatten()[best]) >= -1e-12 * float(diagonal.abs().max()):
            break
        p, q = out[best // len(back)], back[best % len(back)]
        removed[p], removed[q] = 0, 1
    return sorted((removed == 0).nonzero().flatten().tolist())


def fraction_for_budget(cost_at: Callable[[float], int], budget: int, flag: str, unit: str) -> float:
    """The largest keep fraction whose cost ``cost_at(f)`` (in ``unit``: parameters, FLOPs) fits ``budget``
    (bisection); ``flag`` names the option in the error when even the smallest model does not fit."""
    if cost_at(1.0) <= budget:
        return 1.0
    smallest = cost_at(_TINY)
    if smallest > budget:
        raise ConfigError(
            f"{flag}: cannot be met; pruned this way the model keeps at least {smallest:,} {unit} ({budget:,} allowed)"
        )
    low, high = _TINY, 1.0
    for _ in range(40):
        mid = (low + high) / 2
        low, high = (mid, high) if cost_at(mid) <= budget else (low, mid)
    return low


_TINY = 1e-9  # a keep fraction that leaves each layer only its guaranteed minimum
