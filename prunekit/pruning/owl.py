"""OWL — outlier-weighted layer-wise sparsity (Yin et al. 2024, "Outlier Weighed Layerwise Sparsity").

A layer whose Wanda scores |W|·‖X‖ have more outliers (scores above ``threshold`` × the layer's mean)
is pruned less. The layers' keep fractions are linear in their outlier ratios, span ``2 × spread`` and
average to ``1 - target``, so the layer sparsities average to the target.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from prunekit.errors import ConfigError

DEFAULT_THRESHOLD = 5.0  # the paper's M
DEFAULT_SPREAD = 0.08  # the paper's lambda


def outlier_ratio(scores: Iterable[torch.Tensor], threshold: float) -> float:
    """The share of all ``scores`` (one layer's matrices) above ``threshold`` × their mean."""
    scores = list(scores)
    total = sum(float(s.sum(dtype=torch.float64)) for s in scores)
    count = sum(s.numel() for s in scores)
    cut = threshold * total / max(count, 1)
    return sum(int((s > cut).sum()) for s in scores) / max(count, 1)


def owl_sparsities(ratios: Sequence[float], target: float, spread: float) -> list[float]:
    """Each layer's sparsity from its outlier ratio: more outliers, lower sparsity; the mean is ``target``
    and the highest minus the lowest is ``2 × spread`` (all equal when every ratio is)."""
    ratio = torch.tensor(ratios, dtype=torch.float64)
    span = ratio.max() - ratio.min()
    if span == 0:
        return [target] * len(ratios)
    keep = (ratio - ratio.min()) / span * (2 * spread)
    sparsities = (target - (keep - keep.mean())).tolist()
    low, high = min(sparsities), max(sparsities)
    if low < 0 or high >= 1:
        raise ConfigError(
            f"--owl-spread {spread:g} with --sparsity {target:g}: the layers' sparsities would range over "
            f"[{low:.3f}, {high:.3f}], outside [0, 1); lower --owl-spread"
        )
    return sparsities
