"""Choose which weights to prune from their scores: exact counts, ties included.

Pure functions: scores in, boolean *keep* masks out. Scores are non-negative (|W|, Wanda's
|W|·‖X‖). Global selection never concatenates all scores: it finds the exact k-th smallest score
by a radix select on the float32 bit patterns (for non-negative floats, the bit patterns sort like
the values): two histogram passes find the threshold and the count below it, a third writes the
masks. Peak extra memory is one temporary per matrix, not a copy of the model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from prunekit.errors import ConfigError

ScoreFn = Callable[[], torch.Tensor]  # computes one matrix's scores on demand

_TINY = float(torch.finfo(torch.float32).smallest_normal) * 2**-23  # the smallest positive float32
_HIGH_SHIFT = 15  # pass 1 buckets by the top 16 bits of the 31 value bits, pass 2 by the low 15
_LOW_MASK = (1 << _HIGH_SHIFT) - 1


def _bits(scores: torch.Tensor) -> torch.Tensor:
    if (scores < 0).any():
        raise ValueError("importance scores must be non-negative")
    return scores.detach().float().contiguous().view(torch.int32)


def _high_histogram(score_fns: Mapping[str, ScoreFn]) -> torch.Tensor:
    """Pass 1: counts of scores per value of their top 16 bits, over all matrices."""
    counts = torch.zeros(1 << 16, dtype=torch.int64)
    for fn in score_fns.values():
        counts += torch.bincount((_bits(fn()) >> _HIGH_SHIFT).flatten(), minlength=1 << 16)
    return counts


def _kth_smallest_bits(score_fns: Mapping[str, ScoreFn], high_counts: torch.Tensor, k: int) -> tuple[int, int]:
    """Pass 2: bit pattern of the k-th smallest score (1-based), and how many scores lie strictly below it."""
    cumulative = high_counts.cumsum(0)
    bucket = int(torch.searchsorted(cumulative, k))
    below_bucket = int(cumulative[bucket - 1]) if bucket > 0 else 0
    low_counts = torch.zeros(1 << _HIGH_SHIFT, dtype=torch.int64)
    for fn in score_fns.values():
        bits = _bits(fn()).flatten()
        low_counts += torch.bincount(bits[(bits >> _HIGH_SHIFT) == bucket] & _LOW_MASK, minlength=1 << _HIGH_SHIFT)
    low_cumulative = low_counts.cumsum(0)
    low = int(torch.searchsorted(low_cumulative, k - below_bucket))
    below = below_bucket + (int(low_cumulative[low - 1]) if low > 0 else 0)
    return (bucket << _HIGH_SHIFT) | low, below


def _keep_masks_at_threshold(
    score_fns: Mapping[str, ScoreFn], threshold_bits: int, ties_to_prune: int
) -> dict[str, torch.Tensor]:
    """Pass 3: prune everything below the threshold, plus ``ties_to_prune`` ties (in matrix order)."""
    masks: dict[str, torch.Tensor] = {}
    for name, fn in score_fns.items():
        bits = _bits(fn())
        keep = bits >= threshold_bits
        if ties_to_prune > 0:
            ties = (bits == threshold_bits).flatten().nonzero().flatten()[:ties_to_prune]
            keep.view(-1)[ties] = False
            ties_to_prune -= ties.numel()
        masks[name] = keep
    return masks


def check_sparsity(sparsity: float) -> None:
    if not 0.0 <= sparsity < 1.0:
        raise ConfigError(f"--sparsity {sparsity}: expected a fraction in [0, 1), e.g. 0.5 for 50 %")


def select_global(score_fns: Mapping[str, ScoreFn], sparsity: float) -> dict[str, torch.Tensor]:
    """Keep masks pruning exactly ``round(sparsity * total)`` weights, ranked across all matrices.

    >>> masks = select_global({"w": lambda: torch.tensor([[3.0, 1.0], [2.0, 1.0]])}, 0.5)
    >>> masks["w"].tolist()
    [[True, False], [True, False]]
    """
    check_sparsity(sparsity)
    high_counts = _high_histogram(score_fns)
    k = round(sparsity * int(high_counts.sum()))
    if k == 0:
        return {name: torch.ones_like(fn(), dtype=torch.bool) for name, fn in score_fns.items()}
    threshold_bits, below = _kth_smallest_bits(score_fns, high_counts, k)
    return _keep_masks_at_threshold(score_fns, threshold_bits, k - below)


def select_layerwise(score_fns: Mapping[str, ScoreFn], sparsity: float) -> dict[str, torch.Tensor]:
    """Keep masks pruning exactly ``round(sparsity * numel)`` weights of each matrix."""
    return {name: select_global({name: fn}, sparsity)[name] for name, fn in score_fns.items()}


def parse_nm(pattern: str) -> tuple[int, int]:
    """``"2:4"`` -> ``(2, 4)``: keep N of every M."""
    try:
        n, m = (int(part) for part in pattern.split(":"))
    except ValueError:
        raise ConfigError(f"--pattern {pattern!r}: expected N:M with integers, e.g. 2:4") from None
    if not 0 < n < m:
        raise ConfigError(f"--pattern {pattern!r}: expected 0 < N < M (keep N of every M weights), e.g. 2:4")
    return n, m


def select_n_m(scores: torch.Tensor, n: int, m: int, name: str = "weight") -> torch.Tensor:
    """Keep the ``n`` largest of every ``m`` consecutive weights along the input dimension (dim 1)."""
    rows, cols = scores.shape
    if cols % m:
        raise ConfigError(f"{name}: input dimension {cols} is not a multiple of M={m} for an N:M pattern")
    groups = scores.detach().reshape(rows, cols // m, m)  # (out, in/M, M)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(-1, groups.topk(n, dim=-1).indices, True)
    return keep.reshape(rows, cols)


def select_rows(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep masks pruning exactly ``round(sparsity * columns)`` weights of every output row (Wanda's grouping)."""
    check_sparsity(sparsity)
    keep = torch.ones_like(scores, dtype=torch.bool)
    k = round(sparsity * scores.shape[1])
    if k:
        keep.scatter_(1, scores.detach().topk(k, dim=1, largest=False).indices, False)
    return keep


def monotone(score_fns: Mapping[str, ScoreFn], keep: Mapping[str, torch.Tensor] | None) -> dict[str, ScoreFn]:
    """Scores under which weights already pruned (``keep`` False) score 0 and every surviving weight
    scores > 0, so old cuts are chosen first and a new mask only prunes more."""
    if keep is None:
        return dict(score_fns)

    def wrap(fn: ScoreFn, kept: torch.Tensor) -> ScoreFn:
        return lambda: torch.where(kept, fn().clamp_min(_TINY), torch.zeros((), dtype=torch.float32))

    return {name: wrap(fn, keep[name]) if name in keep else fn for name, fn in score_fns.items()}
