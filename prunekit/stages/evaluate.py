"""The ``evaluate`` stage: the model scored with its task's official metric(s), or its perplexity."""

from __future__ import annotations

from dataclasses import dataclass

from prunekit.errors import ConfigError
from prunekit.stages.base import StageContext, StageResult, register_stage


@dataclass
class EvaluateConfig:
    """``evaluate`` has no options of its own: what it reads is the context's data and evaluation settings."""


@register_stage("evaluate", EvaluateConfig, "evaluate the current model", makes_model=False)
def run_evaluate(context: StageContext, config: EvaluateConfig) -> StageResult:
    if context.data is None or context.data.eval is None:
        raise ConfigError("evaluate needs evaluation data: pass --data (or --eval)")
    return StageResult("evaluate", context.model, context.tokenizer, save_format=None)
