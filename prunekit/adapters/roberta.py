"""RoBERTa: BERT's encoder layout under ``roberta.``, with a two-layer classification head."""

from __future__ import annotations

from torch import nn

from prunekit.adapters.bert import BertAdapter
from prunekit.adapters.registry import register_adapter


@register_adapter
class RobertaAdapter(BertAdapter):
    family = "roberta"
    model_types = ("roberta",)

    def classifier(self) -> list[nn.Linear]:
        head = self.model.classifier
        return [head.dense, head.out_proj]
