"""Model adapters: one module per architecture family, all behind ``get_adapter(model)``."""

from prunekit.adapters import bert, distilbert, llama, roberta  # noqa: F401  (register the families)
from prunekit.adapters.base import AttentionBlock, FeedForwardBlock, ModelAdapter, TransformerLayer
from prunekit.adapters.registry import check_supported, get_adapter, register_adapter, supported_model_types

__all__ = [
    "AttentionBlock",
    "FeedForwardBlock",
    "ModelAdapter",
    "TransformerLayer",
    "check_supported",
    "get_adapter",
    "register_adapter",
    "supported_model_types",
]
