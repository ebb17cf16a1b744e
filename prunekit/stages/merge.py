"""The ``merge`` stage: a LoRA adapter (PEFT format) folded into its base model's weights; the base's
masks are applied after merging, so a sparse base stays exactly as sparse."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prunekit.devices import DeviceConfig
from prunekit.errors import ConfigError, ModelError, first_line
from prunekit.options import option, section
from prunekit.stages.base import StageContext, StageResult, register_stage
from prunekit.stages.inputs import DataConfig


@dataclass
class MergeStageConfig:
    """``merge``: the adapter folder (``finetune --lora``'s ``adapter/``) and, to report the metric before
    and after merging, data."""

    adapter: str | None = option(None, "PEFT adapter folder, e.g. DIR/adapter of `finetune --lora`")
    data: DataConfig = section(DataConfig)
    runtime: DeviceConfig = section(DeviceConfig)


@register_stage(
    "merge",
    MergeStageConfig,
    "merge a LoRA adapter (default: the previous stage's adapter/) into its base",
    load=lambda config, inputs: load_merge(config, inputs.model),
    omit=("train",),
)
def run_merge(context: StageContext, config: MergeStageConfig) -> StageResult:
    """Merge ``context.model`` (the base wrapped with its PEFT adapter); with data, the metric before
    the merge is kept beside the merged model's (they must agree)."""
    from prunekit.evaluation.summary import evaluation_fields
    from prunekit.training.lora import merge_lora

    before = evaluation_fields(context.evaluation, context.model, context.tokenizer, context.data)
    merged = merge_lora(context.model, context.masks)
    fields = {"adapter": config.adapter}
    if before:
        fields["metrics_before_merge"] = before["metrics"]
    return StageResult("merge", merged, context.tokenizer, fields, masks=context.masks)


def load_merge(config: MergeStageConfig, model: str) -> StageContext:
    """The base model in ``model`` with the adapter attached (its head built from the adapter folder's
    config), the base's masks, and the data read with the adapter's labels."""
    from peft import PeftModel

    from prunekit.models import is_causal_lm, load_config, load_tokenizer, load_weights, model_class, resolve_model
    from prunekit.pruning.masks import MaskSet
    from prunekit.stages.inputs import evaluation_settings, load_data, resolved_data

    if config.adapter is None:
        raise ConfigError("--adapter: required (the PEFT adapter folder to merge)")
    folder, adapter = resolve_model(model, "--model"), Path(config.adapter)
    if not (adapter / "adapter_config.json").is_file():
        raise ModelError(f"--adapter {adapter}: no adapter_config.json; expected a PEFT adapter folder")
    if not (adapter / "config.json").is_file():
        raise ModelError(f"--adapter {adapter}: no config.json with the task head's labels (written by prunekit)")
    head = load_config(str(adapter), "--adapter")  # the fine-tuned head: labels, problem type
    data_config = resolved_data(config.data, [load_config(folder)])
    runtime = config.runtime
    base = load_weights(model_class(head), folder, head, f"--model {model}", relabel=not is_causal_lm(head),
                        new_head_from="--adapter", saved_architectures=load_config(folder).architectures,
                        dtype=runtime.torch_dtype()).to(runtime.torch_device())  # fmt: skip
    try:
        masks = MaskSet.load(folder, base)  # checked against the plain model, before wrapping
        wrapped = PeftModel.from_pretrained(base, str(adapter))
    except ModelError:
        raise
    except Exception as err:  # peft/transformers raise many types for a mismatched adapter
        raise ModelError(f"--adapter {adapter}: does not fit --model {model} ({first_line(err)})") from None
    data = None
    if data_config.data or data_config.eval:
        data = load_data(head, data_config.data, where=f"--adapter {adapter}", text=True,
                         **{k: v for k, v in data_config.task_options().items() if k != "train_file"})  # fmt: skip
    return StageContext(wrapped, load_tokenizer(folder), data, masks=masks, model_name=model, runtime=runtime,
                        evaluation=evaluation_settings(data_config), encoding=data_config.encoding)  # fmt: skip
