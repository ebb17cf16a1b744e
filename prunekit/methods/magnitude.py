"""Unstructured pruning: magnitude (|W|), Wanda or SparseGPT -> exact-count masks, one-shot or on a schedule.

Magnitude and global Wanda score the whole model at once; SparseGPT and Wanda per row / matrix / N:M
prune layer by layer on calibration data (``prunekit.methods.sequential``)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from prunekit.adapters import get_adapter
from prunekit.errors import ConfigError
from prunekit.importance.weights import input_channel_norms, magnitude_scores, wanda_scores
from prunekit.methods.sequential import prune_sequentially
from prunekit.options import check_options, fraction, option, positive_int, real, unused
from prunekit.pruning.masks import MaskSet
from prunekit.pruning.owl import DEFAULT_SPREAD, DEFAULT_THRESHOLD
from prunekit.pruning.select import (
    monotone,
    parse_nm,
    select_global,
    select_layerwise,
    select_n_m,
    select_rows,
)

SCOPES = ("global", "layer", "row", "uniform")  # uniform: layer's other name (every layer keeps the same share)
DEFAULT_SCOPE = {"magnitude": "global", "wanda": "row", "sparsegpt": "layer"}
IMPORTANCE = ("magnitude", "wanda", "sparsegpt")
LAYER_SPARSITY = ("uniform", "owl")
FIT_TO = ("pruned", "dense")


@dataclass
class MagnitudeConfig:
    """What to prune and how. ``pattern`` (N:M) overrides ``sparsity`` and ``scope``."""

    sparsity: float = option(
        0.5, "fraction of targeted weights to zero (gradual pruning: the final sparsity)", parse=fraction
    )
    scope: str | None = option(
        None,
        "what competes for the kept share: all layers' weights (or heads and neurons) together (global), each "
        "layer's own (layer, also called uniform: every layer keeps the same share) or each output row's (row: "
        "unstructured only); default: global, but wanda row and sparsegpt layer",
        choices=SCOPES,
    )
    pattern: str | None = option(None, "N:M semi-structured pattern, e.g. 2:4 (overrides --sparsity and --scope)")
    targets: str | None = option(None, "regex over module names to prune (default: attention + FFN projections)")
    exclude: str | None = option(None, "regex over module names to leave dense")
    importance: str = option(
        "magnitude",
        "magnitude: |W|; wanda: |W|·‖X‖; sparsegpt: prune and update the kept weights to reconstruct each "
        "layer's outputs. Wanda and SparseGPT calibrate on --data's training split, layer by layer",
        choices=IMPORTANCE,
    )
    block_size: int = option(128, "sparsegpt: columns per mask-selection block", parse=positive_int)
    dampening: float = option(
        0.01, "sparsegpt: added to the Hessian diagonal, relative to its mean", parse=real(0, low_open=True)
    )
    within_layer: str | None = option(
        None,
        "wanda / sparsegpt: score all of a layer's projections from one pass over its input (together), or each "
        "group that reads one input (q/k/v, then o, then gate/up, then down) on what the groups before it, "
        "already pruned, produce (sequential: SparseGPT's true-sequential; one more pass per group); default: "
        "sequential for sparsegpt, together for wanda (where it changed little at twice the time)",
        choices=("together", "sequential"),
    )
    fit_to: str = option(
        "dense",
        "sparsegpt: what each matrix's kept weights are refit to reproduce: the dense model's own outputs, so "
        "each matrix also corrects the error the pruned layers before it left (dense: GPTAQ's asymmetric "
        "calibration; a dense copy of the layer and of the calibration activations is kept, and each group "
        "takes one more pass), or its dense weights' outputs on the inputs the pruned layers before it produce "
        "(pruned: SparseGPT as published, the default before 2026-12-08)",
        choices=FIT_TO,
    )
    layer_sparsity: str = option(
        "uniform",
        "wanda / sparsegpt: every layer pruned to --sparsity (uniform), or each layer's sparsity set by its share "
        "of outlier weights on the calibration data, less pruning where there are more, averaging to --sparsity "
        "(owl: Yin et al. 2024)",
        choices=LAYER_SPARSITY,
    )
    owl_threshold: float = option(
        DEFAULT_THRESHOLD,
        "owl: a weight is an outlier when its Wanda score |W|·‖X‖ exceeds this many times its layer's mean",
        parse=real(1, low_open=True),
    )
    owl_spread: float = option(
        DEFAULT_SPREAD,
        "owl: the layers' sparsities span twice this, from the most to the fewest outliers",
        parse=real(0, 0.5, low_open=True),
    )

    def __post_init__(self) -> None:
        check_options(self)
        if self.within_layer is None:
            self.within_layer = "sequential" if self.importance == "sparsegpt" else "together"
        if self.scope is None:
            self.scope = DEFAULT_SCOPE[self.importance]
        elif self.scope == "uniform":
            self.scope = "layer"
        if self.importance == "sparsegpt" and self.scope == "global" and self.pattern is None:
            raise ConfigError("--scope global: sparsegpt prunes each matrix to --sparsity; use --scope layer")
        if self.pattern is not None:
            parse_nm(self.pattern)
        if self.owl and (self.importance == "magnitude" or self.pattern is not None or self.scope == "global"):
            raise ConfigError(
                "--layer-sparsity owl: only for --importance wanda or sparsegpt pruned layer by layer "
                "(--scope row or layer, no --pattern: N:M fixes every layer's sparsity)"
            )
        for flag, pattern in (("--targets", self.targets), ("--exclude", self.exclude)):
            if pattern is not None:
                try:
                    re.compile(pattern)
                except re.error as err:
                    raise ConfigError(f"{flag} {pattern!r}: not a valid regular expression ({err})") from None

    def ineffective(self) -> dict[str, str]:
        ignored = {} if self.pattern is None else unused(("sparsity", "scope"), "with --pattern (N:M sets both)")
        if self.importance != "sparsegpt":
            ignored.update(unused(("block_size", "dampening", "fit_to"),
                                  f"with --importance {self.importance} (only sparsegpt)"))  # fmt: skip
        if not self.layer_by_layer:
            ignored["within_layer"] = "unless pruning layer by layer (sparsegpt, wanda per row or layer)"
        if not self.owl:
            ignored.update(unused(("owl_threshold", "owl_spread"), "without --layer-sparsity owl"))
        return ignored

    @property
    def owl(self) -> bool:
        return self.layer_sparsity == "owl"

    @property
    def layer_by_layer(self) -> bool:
        """Pruned layer by layer on calibration data: SparseGPT, and Wanda unless ranked globally."""
        return self.importance == "sparsegpt" or (
            self.importance == "wanda" and (self.scope != "global" or self.pattern is not None)
        )


def resolve_targets(model: nn.Module, targets: str | None = None, exclude: str | None = None) -> dict[str, nn.Module]:
    """``{weight parameter name: module}`` to prune.

    Default: the attention and FFN projections of every transformer layer (embeddings, norms,
    biases and the classifier untouched). ``targets`` / ``exclude`` are regexes searched in module
    names, over all Linear and Embedding modules.
    """
    if targets is None:
        found = {f"{name}.weight": module for name, module in get_adapter(model).prunable_linears().items()}
    else:
        found = {
            f"{name}.weight": module
            for name, module in model.named_modules()
            if isinstance(module, nn.Linear | nn.Embedding) and re.search(targets, name)
        }
    if exclude is not None:
        found = {name: module for name, module in found.items() if not re.search(exclude, name[: -len(".weight")])}
    if not found:
        raise ConfigError(
            f"--targets {targets!r} / --exclude {exclude!r}: no weight matrix matches; "
            f"example module names: {', '.join(n for n, m in model.named_modules() if isinstance(m, nn.Linear))[:200]}"
        )
    return found


def compute_masks(
    model: nn.Module,
    config: MagnitudeConfig,
    calibration: Iterable[dict[str, torch.Tensor]] | None = None,
    current: MaskSet | None = None,
) -> MaskSet:
    """Masks for ``model`` under ``config``; with ``current`` they only prune more (monotone).
    Layer-by-layer methods prune as they go: use ``prune_magnitude`` for them."""
    if config.layer_by_layer:
        raise ConfigError(f"--importance {config.importance}: one-shot only (prune magnitude), it prunes as it scores")
    modules = resolve_targets(model, config.targets, config.exclude)
    weights = {name: module.weight for name, module in modules.items()}
    if config.importance == "wanda":
        if calibration is None:
            raise ConfigError("--importance wanda needs calibration data: pass --data")
        linears = {name: module for name, module in modules.items() if isinstance(module, nn.Linear)}
        score_fns = wanda_scores(weights, input_channel_norms(model, linears, calibration))
    else:
        score_fns = magnitude_scores(weights)
    score_fns = monotone(score_fns, current.masks if current else None)

    if config.pattern is not None:
        n, m = parse_nm(config.pattern)
        masks = {name: select_n_m(fn(), n, m, name) for name, fn in score_fns.items()}
    elif config.scope == "row":
        masks = {name: select_rows(fn(), config.sparsity) for name, fn in score_fns.items()}
    elif config.scope == "layer":
        masks = select_layerwise(score_fns, config.sparsity)
    else:
        masks = select_global(score_fns, config.sparsity)
    new = MaskSet(masks)
    return current.merged_with(new) if current is not None else new


def prune_magnitude(
    model: nn.Module,
    config: MagnitudeConfig,
    calibration: Iterable[dict[str, torch.Tensor]] | None = None,
    current: MaskSet | None = None,
) -> MaskSet:
    """One-shot: compute masks and zero the pruned weights in place.

    >>> masks = prune_magnitude(model, MagnitudeConfig(sparsity=0.7))  # doctest: +SKIP
    >>> masks.sparsity()  # doctest: +SKIP
    0.7
    """
    if config.layer_by_layer:
        if calibration is None:
            raise ConfigError(f"--importance {config.importance} needs calibration data: pass --data")
        targets = resolve_targets(model, config.targets, config.exclude)
        return prune_sequentially(model, targets, calibration, importance=config.importance, sparsity=config.sparsity,
                                  scope=config.scope, pattern=config.pattern, block_size=config.block_size,
                                  dampening=config.dampening, current=current,
                                  owl=(config.owl_threshold, config.owl_spread) if config.owl else None,
                                  sequential=config.within_layer == "sequential", fit_to=config.fit_to)  # fmt: skip
    masks = compute_masks(model, config, calibration, current)
    masks.apply(model)
    return masks
