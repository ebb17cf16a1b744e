"""DistilBERT: ``distilbert.transformer.layer[i].attention.{q,k,v,out}_lin`` and ``ffn.lin{1,2}``."""

from __future__ import annotations

from torch import nn

from prunekit.adapters.base import AttentionBlock, FeedForwardBlock, ModelAdapter
from prunekit.adapters.registry import register_adapter


@register_adapter
class DistilBertAdapter(ModelAdapter):
    family = "distilbert"
    model_types = ("distilbert",)
    attention_path = "attention"
    ffn_config_key = "hidden_dim"

    def layer_list(self) -> nn.ModuleList:
        return self.base.transformer.layer

    def attention(self, layer: nn.Module) -> AttentionBlock:
        attn = layer.attention
        return AttentionBlock(
            module=attn,
            query=attn.q_lin,
            key=attn.k_lin,
            value=attn.v_lin,
            output=attn.out_lin,
            head_dim=attn.attention_head_size,
        )

    def ffn(self, layer: nn.Module) -> FeedForwardBlock:
        return FeedForwardBlock(up=layer.ffn.lin1, down=layer.ffn.lin2)

    def word_embeddings(self) -> nn.Embedding:
        return self.base.embeddings.word_embeddings

    def classifier(self) -> list[nn.Linear]:
        return [self.model.pre_classifier, self.model.classifier]
