"""prunekit: compress transformer language models and measure what it buys."""

from prunekit.pruned_models import load_pruned, register_auto_classes, save_pruned
from prunekit.version import __version__

register_auto_classes()  # structurally pruned models load through the Auto classes

from prunekit.api import (  # noqa: E402 (after the Auto classes)
    distill,
    evaluate,
    finetune,
    prune_magnitude,
    prune_streamed,
    prune_structured,
    run,
)
from prunekit.models import load_model  # noqa: E402

__all__ = [
    "__version__",
    "distill",
    "evaluate",
    "finetune",
    "load_model",
    "load_pruned",
    "prune_magnitude",
    "prune_streamed",
    "prune_structured",
    "run",
    "save_pruned",
]
