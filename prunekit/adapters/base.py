"""Where a model's prunable structure lives: the one view every method works through.

An adapter maps one architecture family onto the same few nouns: transformer layers, each with
an attention block (q/k/v/output projections, heads, KV groups) and a feed-forward block
(up/down and optional gate projections); the word embeddings; the classifier head.
Head counts are read from the live weight shapes, so they stay right after pruning.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from torch import nn


@dataclass
class AttentionBlock:
    """One layer's self-attention. ``module`` is the object whose forward splits heads."""

    module: nn.Module
    query: nn.Linear
    key: nn.Linear
    value: nn.Linear
    output: nn.Linear
    head_dim: int

    @property
    def num_heads(self) -> int:
        return self.query.out_features // self.head_dim

    @property
    def num_kv_heads(self) -> int:
        return self.key.out_features // self.head_dim

    @property
    def heads_per_kv_group(self) -> int:
        return self.num_heads // max(self.num_kv_heads, 1)

    @property
    def grouped(self) -> bool:
        """Grouped-query attention: several query heads share one K/V head (else K/V go with their head)."""
        return self.heads_per_kv_group > 1

    @property
    def head_groups(self) -> int:
        """How many groups kept query heads are spread over evenly: the KV groups under grouped-query
        attention, else 1 (any head may go)."""
        return self.num_kv_heads if self.grouped else 1

    def kv_heads_kept(self, heads: int) -> int:
        """K/V heads left when ``heads`` query heads stay, spread evenly over the KV groups."""
        return (self.num_kv_heads if heads else 0) if self.grouped else heads

    def kv_groups_of(self, heads: Sequence[int]) -> tuple[list[int], int]:
        """The KV heads serving the query heads ``heads`` and how many query heads each serves; raises
        unless every kept group serves the same number (so the model's ``repeat_kv`` stays valid)."""
        counts = Counter(head // self.heads_per_kv_group for head in heads)
        if len(set(counts.values())) > 1:
            raise ValueError("kept query heads must be spread evenly over KV groups (grouped-query attention)")
        groups = sorted(counts)
        return groups, (len(heads) // len(groups) if groups else 0)

    def head_layout(self, heads: int, kv_heads: int) -> list[int]:
        """Which of this layer's heads a saved structure of ``heads`` query / ``kv_heads`` K/V heads keeps:
        the first ones, taking the first ``heads / kv_heads`` of each of the first ``kv_heads`` groups."""
        if not self.grouped:
            return list(range(heads))
        per_group = heads // kv_heads if kv_heads else 0
        return [g * self.heads_per_kv_group + j for g in range(kv_heads) for j in range(per_group)]


@dataclass
class FeedForwardBlock:
    """One layer's FFN: ``down(act(gate(x)) * up(x))`` or ``down(act(up(x)))`` when ``gate`` is None."""

    up: nn.Linear
    down: nn.Linear
    gate: nn.Linear | None = None

    @property
    def num_neurons(self) -> int:
        return self.up.out_features


@dataclass
class TransformerLayer:
    index: int
    module: nn.Module
    attention: AttentionBlock
    ffn: FeedForwardBlock

    def linears(self) -> list[nn.Linear]:
        """The layer's projections: attention q, k, v, output, then FFN gate (if any), up, down."""
        attn, ffn = self.attention, self.ffn
        found = (attn.query, attn.key, attn.value, attn.output, ffn.gate, ffn.up, ffn.down)
        return [linear for linear in found if linear is not None]


class ModelAdapter(ABC):
    """Base class: subclasses name their ``model_types`` and locate the blocks."""

    family: ClassVar[str]
    model_types: ClassVar[tuple[str, ...]]
    #: Where the attention module sits inside a layer (dotted path; replaced when all heads go).
    attention_path: ClassVar[str]
    #: The config field that holds the FFN width.
    ffn_config_key: ClassVar[str] = "intermediate_size"
    #: Whether the config states the head size (else it is hidden_size // num_attention_heads).
    head_dim_in_config: ClassVar[bool] = False

    def __init__(self, model: nn.Module):
        self.model = model

    @property
    def base(self) -> nn.Module:
        """The base model (``model.bert``, ``model.model``, ...), or ``model`` itself if it is one."""
        return getattr(self.model, self.model.base_model_prefix, self.model)

    @abstractmethod
    def layer_list(self) -> nn.ModuleList:
        """The container of transformer layers (removing a layer edits this list)."""

    @abstractmethod
    def attention(self, layer: nn.Module) -> AttentionBlock: ...

    @abstractmethod
    def ffn(self, layer: nn.Module) -> FeedForwardBlock: ...

    @abstractmethod
    def word_embeddings(self) -> nn.Embedding: ...

    @abstractmethod
    def classifier(self) -> list[nn.Linear]:
        """The task head's linear layers, input side first (pooler/pre-classifier included)."""

    def layers(self) -> list[TransformerLayer]:
        return [
            TransformerLayer(i, layer, self.attention(layer), self.ffn(layer))
            for i, layer in enumerate(self.layer_list())
        ]

    def head_groups(self) -> list[int]:
        """Per layer, how many groups its kept query heads are spread over (``AttentionBlock.head_groups``)."""
        return [layer.attention.head_groups for layer in self.layers()]

    def layer_prefixes(self) -> list[str]:
        """Per transformer layer, the prefix of its parameter names (``model.layers.3.``)."""
        names = {id(module): name for name, module in self.model.named_modules()}
        return [names[id(layer)] + "." for layer in self.layer_list()]

    def prunable_linears(self) -> dict[str, nn.Linear]:
        """Qualified name -> Linear for every projection inside the transformer layers."""
        names = {id(module): name for name, module in self.model.named_modules()}
        found: dict[str, nn.Linear] = {}
        for layer in self.layers():
            for linear in layer.linears():
                found[names[id(linear)]] = linear
        return found

    def describe(self) -> list[dict[str, int]]:
        """Per-layer structure: heads, KV heads, head size, FFN width."""
        return [
            {
                "heads": layer.attention.num_heads,
                "kv_heads": layer.attention.num_kv_heads,
                "head_dim": layer.attention.head_dim,
                "ffn": layer.ffn.num_neurons,
            }
            for layer in self.layers()
        ]
