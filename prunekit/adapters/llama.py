"""Llama-style decoders (Llama, MobileLLM-like, Mistral, Qwen2): grouped-query attention, gated FFN."""

from __future__ import annotations

from torch import nn

from prunekit.adapters.base import AttentionBlock, FeedForwardBlock, ModelAdapter
from prunekit.adapters.registry import register_adapter


@register_adapter
class LlamaAdapter(ModelAdapter):
    family = "llama"
    model_types = ("llama", "mistral", "qwen2")
    attention_path = "self_attn"
    head_dim_in_config = True

    def layer_list(self) -> nn.ModuleList:
        return self.base.layers

    def attention(self, layer: nn.Module) -> AttentionBlock:
        attn = layer.self_attn
        return AttentionBlock(
            module=attn,
            query=attn.q_proj,
            key=attn.k_proj,
            value=attn.v_proj,
            output=attn.o_proj,
            head_dim=attn.head_dim,
        )

    def ffn(self, layer: nn.Module) -> FeedForwardBlock:
        mlp = layer.mlp
        return FeedForwardBlock(up=mlp.up_proj, down=mlp.down_proj, gate=mlp.gate_proj)

    def word_embeddings(self) -> nn.Embedding:
        return self.base.embed_tokens

    def classifier(self) -> list[nn.Linear]:
        return [self.model.score]
