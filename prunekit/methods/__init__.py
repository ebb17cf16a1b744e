"""Compression methods, one module each."""

from prunekit.methods.magnitude import MagnitudeConfig, compute_masks, prune_magnitude, resolve_targets

__all__ = ["MagnitudeConfig", "compute_masks", "prune_magnitude", "resolve_targets"]
