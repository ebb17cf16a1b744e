"""What to cut: selection (exact counts, N:M), masks, schedules and the sparse save format."""

from prunekit.pruning.masks import MASKS_FILE, MaskSet
from prunekit.pruning.schedules import CubicSchedule
from prunekit.pruning.select import select_global, select_layerwise, select_n_m, select_rows

__all__ = ["MASKS_FILE", "CubicSchedule", "MaskSet", "select_global", "select_layerwise", "select_n_m", "select_rows"]
