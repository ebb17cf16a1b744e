"""Adapters registered by ``config.model_type``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prunekit.errors import UnsupportedModelError

if TYPE_CHECKING:
    from torch import nn
    from transformers import PretrainedConfig

    from prunekit.adapters.base import ModelAdapter

_ADAPTERS: dict[str, type[ModelAdapter]] = {}
#: Structurally pruned models are saved as ``prunekit_<model_type>`` (see prunekit.pruned_models).
PRUNED_PREFIX = "prunekit_"


def base_model_type(model_type: str | None) -> str | None:
    """``bert`` for both ``bert`` and ``prunekit_bert``."""
    return model_type.removeprefix(PRUNED_PREFIX) if model_type else model_type


def register_adapter(cls: type[ModelAdapter]) -> type[ModelAdapter]:
    """Class decorator: route each of ``cls.model_types`` to ``cls``."""
    for model_type in cls.model_types:
        _ADAPTERS[model_type] = cls
    return cls


def supported_model_types() -> list[str]:
    return sorted(_ADAPTERS)


def check_supported(config: PretrainedConfig, where: str = "model") -> None:
    """Raise UnsupportedModelError naming the supported model types when ``config`` has no adapter."""
    model_type = base_model_type(getattr(config, "model_type", None))
    if model_type not in _ADAPTERS:
        raise UnsupportedModelError(
            f"{where}: architecture {model_type!r} is not supported; supported model types: "
            f"{', '.join(supported_model_types())}"
        )


def get_adapter(model: nn.Module) -> ModelAdapter:
    """The adapter for ``model`` (a transformers model with a sequence-classification head)."""
    check_supported(model.config)
    return _ADAPTERS[base_model_type(model.config.model_type)](model)
