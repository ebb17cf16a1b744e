"""How important each weight or unit is: score functions."""

from prunekit.importance.weights import input_channel_norms, magnitude_scores, wanda_scores

__all__ = ["input_channel_norms", "magnitude_scores", "wanda_scores"]
