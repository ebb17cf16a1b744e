"""prunekit: compress transformer language models and measure what it buys."""

__version__ = "0.1.0"

from prunekit.pruned_models import load_pruned, register_auto_classes, save_pruned

register_auto_classes()  # structurally pruned models load through the Auto classes

__all__ = ["__version__", "load_pruned", "save_pruned"]
