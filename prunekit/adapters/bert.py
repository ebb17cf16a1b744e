"""BERT family (BERT, MiniLM): ``bert.encoder.layer[i].attention.self.{query,key,value}``."""

from __future__ import annotations

from torch import nn

from prunekit.adapters.base import AttentionBlock, FeedForwardBlock, ModelAdapter
from prunekit.adapters.registry import register_adapter


@register_adapter
class BertAdapter(ModelAdapter):
    family = "bert"
    model_types = ("bert",)
    attention_path = "attention.self"

    def layer_list(self) -> nn.ModuleList:
        return self.base.encoder.layer

    def attention(self, layer: nn.Module) -> AttentionBlock:
        self_attn = layer.attention.self
        return AttentionBlock(
            module=self_attn,
            query=self_attn.query,
            key=self_attn.key,
            value=self_attn.value,
            output=layer.attention.output.dense,
            head_dim=self_attn.attention_head_size,
        )

    def ffn(self, layer: nn.Module) -> FeedForwardBlock:
        return FeedForwardBlock(up=layer.intermediate.dense, down=layer.output.dense)

    def word_embeddings(self) -> nn.Embedding:
        return self.base.embeddings.word_embeddings

    def classifier(self) -> list[nn.Linear]:
        pooler = getattr(self.base, "pooler", None)
        return ([pooler.dense] if pooler is not None else []) + [self.model.classifier]
