"""Save and reload structurally pruned models, with or without prunekit's own classes.

A result that a plain config can express (the same FFN width in every layer, the original head count —
or any uniform head count where the config states the head size, as Llama's does — dropped layers, a
smaller vocabulary) is saved as a vanilla model: plain ``AutoModelForSequenceClassification`` (or, for a
decoder pruned as a language model, ``AutoModelForCausalLM``) loads it.

Anything else (layers of different widths, layers without attention) is saved with
``model_type = "prunekit_<type>"`` and the per-layer structure in ``config.json``
(``prunekit_structure``: heads, KV heads, head size and FFN width per layer). Importing ``prunekit``
registers these config/model classes with transformers' Auto classes — no ``trust_remote_code``, no
pickle — so ``AutoModelForSequenceClassification.from_pretrained(path)`` (``AutoModelForCausalLM`` for
a language model) and ``load_pruned(path)`` both rebuild the model: the parent architecture first,
then shrunk to the saved structure (on meta tensors, before the weights load).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import transformers
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
)

from prunekit.adapters import get_adapter
from prunekit.adapters.registry import PRUNED_PREFIX, base_model_type
from prunekit.pruning.surgery import prune_heads, prune_neurons

STRUCTURE_KEY = "prunekit_structure"
_FAMILIES = {  # model_type -> the transformers classes prunekit_<model_type> derives from (causal LM: decoders)
    "bert": ("BertConfig", "BertModel", "BertForSequenceClassification", None),
    "roberta": ("RobertaConfig", "RobertaModel", "RobertaForSequenceClassification", None),
    "distilbert": ("DistilBertConfig", "DistilBertModel", "DistilBertForSequenceClassification", None),
    "llama": ("LlamaConfig", "LlamaModel", "LlamaForSequenceClassification", "LlamaForCausalLM"),
    "mistral": ("MistralConfig", "MistralModel", "MistralForSequenceClassification", "MistralForCausalLM"),
    "qwen2": ("Qwen2Config", "Qwen2Model", "Qwen2ForSequenceClassification", "Qwen2ForCausalLM"),
}


@dataclass(frozen=True)
class PrunedClasses:
    config: type[PretrainedConfig]
    base_model: type[PreTrainedModel]
    classifier: type[PreTrainedModel]
    causal_lm: type[PreTrainedModel] | None


PRUNED_CLASSES: dict[str, PrunedClasses] = {}


def apply_structure(model: PreTrainedModel, structure: list[dict[str, int]]) -> None:
    """Shrink a freshly built model to ``structure`` (kept units are the first ones of each layer)."""
    adapter = get_adapter(model)
    layers = adapter.layers()
    if len(structure) != len(layers):
        raise ValueError(f"{STRUCTURE_KEY} describes {len(structure)} layers, the config builds {len(layers)}")
    heads, neurons = {}, {}
    for index, (layer, kept) in enumerate(zip(layers, structure)):
        heads[index] = layer.attention.head_layout(kept["heads"], kept["kv_heads"])
        neurons[index] = range(kept["ffn"])
    prune_heads(adapter, heads)
    prune_neurons(adapter, neurons)


def _pruned_model_class(parent: type[PreTrainedModel], config_class: type[PretrainedConfig]) -> type[PreTrainedModel]:
    """``parent`` built as usual, then shrunk to ``config.prunekit_structure`` (idempotent, so a
    classifier whose base model is itself a pruned class is fine)."""

    def __init__(self, config, *args, **kwargs):
        parent.__init__(self, config, *args, **kwargs)
        if config.prunekit_structure:
            apply_structure(self, config.prunekit_structure)

    name = "Prunekit" + parent.__name__
    return type(name, (parent,), {"config_class": config_class, "__init__": __init__, "__module__": __name__})


def _make_pruned_classes(model_type: str) -> PrunedClasses:
    config_base, base_model, classifier, causal_lm = (
        getattr(transformers, name) if name else None for name in _FAMILIES[model_type]
    )
    pruned_type = PRUNED_PREFIX + model_type

    class PrunedConfig(config_base):
        model_type = pruned_type
        prunekit_structure: list | None = None

    PrunedConfig.__name__ = PrunedConfig.__qualname__ = "Prunekit" + config_base.__name__
    PrunedConfig.__module__ = __name__

    def pruned(parent: type[PreTrainedModel] | None) -> type[PreTrainedModel] | None:
        return _pruned_model_class(parent, PrunedConfig) if parent is not None else None

    return PrunedClasses(PrunedConfig, pruned(base_model), pruned(classifier), pruned(causal_lm))


def register_auto_classes() -> None:
    """Make ``AutoConfig``, ``AutoModel``, ``AutoModelForSequenceClassification`` and (decoders)
    ``AutoModelForCausalLM`` know ``prunekit_<type>`` models."""
    for model_type in _FAMILIES:
        if model_type not in PRUNED_CLASSES:
            PRUNED_CLASSES[model_type] = _make_pruned_classes(model_type)
        classes = PRUNED_CLASSES[model_type]
        AutoConfig.register(classes.config.model_type, classes.config, exist_ok=True)
        AutoModel.register(classes.config, classes.base_model, exist_ok=True)
        AutoModelForSequenceClassification.register(classes.config, classes.classifier, exist_ok=True)
        if classes.causal_lm is not None:
            AutoModelForCausalLM.register(classes.config, classes.causal_lm, exist_ok=True)


def _plain_fields(model: PreTrainedModel, structure: list[dict[str, int]]) -> dict | None:
    """Config fields that express ``structure`` in a vanilla config, or None if it cannot."""
    adapter = get_adapter(model)
    config = model.config
    widths = {layer["ffn"] for layer in structure}
    heads = {(layer["heads"], layer["kv_heads"]) for layer in structure}
    if len(widths) != 1 or len(heads) != 1 or 0 in widths:
        return None
    ((num_heads, kv_heads),) = heads
    fields = {"num_hidden_layers": len(structure), adapter.ffn_config_key: widths.pop()}
    if adapter.head_dim_in_config:
        if num_heads == 0:
            return None
        fields.update(num_attention_heads=num_heads, num_key_value_heads=kv_heads, head_dim=structure[0]["head_dim"])
    elif num_heads != config.num_attention_heads:
        return None
    return fields


def save_pruned(model: PreTrainedModel, folder: str | os.PathLike) -> str:
    """``save_pretrained`` for a structurally pruned model; returns ``"plain"`` or ``"prunekit"``
    (the format chosen, see the module docstring)."""
    structure = get_adapter(model).describe()
    fields = _plain_fields(model, structure)
    model_type = base_model_type(model.config.model_type)
    values = {key: value for key, value in model.config.to_dict().items() if key not in ("model_type", STRUCTURE_KEY)}
    if fields is not None:
        config_cls, architecture = (
            transformers.CONFIG_MAPPING[model_type],
            type(model).__name__.removeprefix("Prunekit"),
        )
    else:
        config_cls = PRUNED_CLASSES[model_type].config
        architecture, fields = "Prunekit" + type(model).__name__.removeprefix("Prunekit"), {STRUCTURE_KEY: structure}
    config = config_cls.from_dict({**values, **fields, "architectures": [architecture]})
    model.save_pretrained(folder)
    config.save_pretrained(folder)  # replaces the config written with the weights
    return "plain" if STRUCTURE_KEY not in fields else "prunekit"


def load_pruned(path: str | os.PathLike, **kwargs) -> PreTrainedModel:
    """Load a model saved by ``save_pruned`` (either format; a classifier or a causal LM, as saved),
    strictly (``models.load_weights``: a missing, extra or mis-shaped tensor is an error); kwargs go to
    ``from_pretrained``."""
    from prunekit.models import load_weights, model_class

    config = AutoConfig.from_pretrained(path)
    return load_weights(model_class(config), str(path), config, str(path), **kwargs)
