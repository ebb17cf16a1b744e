"""prunekit: compress transformer language models and measure what it buys."""

__version__ = "0.1.0"

from prunekit.pruned_models import load_pruned, register_auto_classes, save_pruned

register_auto_classes()  # structurally pruned models load through the Auto classes

from prunekit.api import evaluate, prune_magnitude, prune_structured  # noqa: E402 (after the Auto classes)
from prunekit.models import load_model  # noqa: E402

__all__ = [
    "__version__",
    "evaluate",
    "load_model",
    "load_pruned",
    "prune_magnitude",
    "prune_structured",
    "save_pruned",
]
