"""The ``evaluate`` stage: the model scored with its task's official metric(s), or its perplexity."""

from __future__ import annotations

from dataclasses import dataclass, replace

from prunekit.devices import DeviceConfig, OffloadConfig
from prunekit.errors import ConfigError
from prunekit.options import option, positive_int, section
from prunekit.stages.base import StageContext, StageInputs, StageResult, register_stage
from prunekit.stages.inputs import DataConfig


@dataclass
class EvaluateConfig:
    """``evaluate``: the data, the evaluation batch size, and big-model loading for a model that does not fit."""

    batch_size: int | None = option(
        None, "examples per batch (default 64; text corpus: windows, default 4)", parse=positive_int
    )
    data: DataConfig = section(DataConfig)
    runtime: DeviceConfig = section(DeviceConfig)
    offload: OffloadConfig = section(OffloadConfig)


def load_evaluate(config: EvaluateConfig, inputs: StageInputs) -> StageContext:
    """The model as saved with its own trained head (a new random one is refused) and its data."""
    from prunekit.stages.inputs import load_saved

    context = load_saved(config, inputs, trained_head=True)
    return replace(context, evaluation=replace(context.evaluation, batch_size=config.batch_size))


@register_stage(
    "evaluate",
    EvaluateConfig,
    "evaluate the current model",
    load=load_evaluate,
    makes_model=False,
    omit=("train", "save_dtype"),
)
def run_evaluate(context: StageContext, config: EvaluateConfig) -> StageResult:
    if context.data is None or context.data.eval is None:
        raise ConfigError("evaluate needs evaluation data: pass --data (or --eval)")
    return StageResult("evaluate", context.model, context.tokenizer, save_format=None)
