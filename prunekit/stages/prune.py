"""One-shot pruning stages: ``prune-magnitude`` (zeros: magnitude, Wanda, SparseGPT; masks kept) and
``prune-structured`` (heads, FFN neurons, layers and vocabulary removed physically)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from prunekit.devices import DeviceConfig
from prunekit.errors import ConfigError, DataError
from prunekit.methods.magnitude import MagnitudeConfig, prune_magnitude
from prunekit.methods.structured import StructuredConfig, prune_structured
from prunekit.options import leaf_options, option, option_key, section, unused
from prunekit.stages.base import StageContext, StageInputs, StageResult, register_stage
from prunekit.stages.inputs import (
    MAGNITUDE_SAMPLES,
    UNIT_EXAMPLES,
    UNIT_WINDOWS,
    CalibrationConfig,
    DataConfig,
    example_batches,
    labelled_batches,
)

NEEDS_LABELS = {"taylor", "head-mask-gradient", "fisher", "drop-one"}  # scores from the task loss's gradients or value


@dataclass
class PruneMagnitudeConfig:
    """``prune-magnitude``: what to zero (``MagnitudeConfig``), how calibration examples are drawn, and
    the saved format."""

    pruning: MagnitudeConfig = section(MagnitudeConfig)
    calibration: CalibrationConfig = section(CalibrationConfig)
    save_format: str = option(
        "dense", "dense: plain save_pretrained with zeros; sparse: bitmask + values", choices=("dense", "sparse")
    )
    stream: bool = option(
        False,
        "for models bigger than memory: read, prune and write one transformer layer at a time from the model "
        "folder's safetensors (peak memory: one layer, its statistics and the calibration activations); saves "
        "shards in the input's dtype (or --save-dtype) without evaluating; --resume continues a killed run; "
        "not with --scope global",
        switch=True,
    )
    data: DataConfig = section(DataConfig)
    runtime: DeviceConfig = section(DeviceConfig)

    def __post_init__(self) -> None:
        if self.stream and self.save_format != "dense":
            raise ConfigError("--stream writes the dense format (shards with zeros and a masks file); drop "
                              "--save-format sparse")  # fmt: skip

    @property
    def needs_data(self) -> bool:
        """Wanda and SparseGPT calibrate on data."""
        return self.pruning.importance != "magnitude"

    def ineffective(self) -> dict[str, str]:
        if self.needs_data:
            return {}
        keys = [option_key(flag) for _, _, flag, _ in leaf_options(CalibrationConfig)]
        return unused(keys, "with --importance magnitude (it reads no data)")

    def draw(self, text: bool) -> CalibrationConfig:
        """The calibration draw, its defaults resolved (``text``: the data is a text corpus)."""
        return replace(self.calibration, samples=self.calibration.samples or MAGNITUDE_SAMPLES)


def load_one_shot(config, inputs: StageInputs, masks: bool, stream: bool = False) -> StageContext:
    """A one-shot stage's context: the data (its training split drawn for calibration when the method
    needs it), the model as saved (a causal LM for a text corpus) and, with ``masks``, its masks; with
    ``stream``, no model (the stage reads it a layer at a time) and where the result goes."""
    from prunekit.data.text import is_text_corpus
    from prunekit.models import load_config, load_model, load_tokenizer, resolve_model, task_of
    from prunekit.pruning.masks import MaskSet
    from prunekit.stages.inputs import evaluation_settings, load_data, resolved_data

    folder = resolve_model(inputs.model, "--model")
    model_config = load_config(folder)
    data_config = resolved_data(config.data, [model_config])
    if config.needs_data and not (data_config.data or data_config.train):
        raise ConfigError(f"--importance {config.pruning.importance} needs calibration data: pass --data")
    draw = config.draw(is_text_corpus(data_config.data, data_config.train, data_config.eval))
    data = None
    if data_config.data or data_config.eval or data_config.train:
        options = {**data_config.task_options(), "max_train_samples": draw.samples, "seed": draw.seed}
        data = load_data(model_config, data_config.data, where=f"--model {inputs.model}", need_train=config.needs_data,
                         text=True, **options)  # fmt: skip
    runtime = config.runtime
    evaluation = evaluation_settings(data_config)
    if stream:
        if inputs.out is None:
            raise ConfigError("--stream writes its result layer by layer: pass --out")
        return StageContext(None, load_tokenizer(folder), data, model_name=inputs.model, model_path=folder,
                            task=task_of(folder), runtime=runtime, evaluation=evaluation, encoding=data_config.encoding,
                            out=inputs.out, resume=inputs.resume, overwrite=inputs.overwrite)  # fmt: skip
    model, tokenizer = load_model(inputs.model, data.task if data is not None and data.task.causal_lm else None,
                                  dtype=runtime.torch_dtype(), device=runtime.torch_device())  # fmt: skip
    return StageContext(model, tokenizer, data, masks=MaskSet.load(folder, model) if masks else None,
                        model_name=inputs.model, model_path=folder, task=task_of(folder), runtime=runtime,
                        evaluation=evaluation, encoding=data_config.encoding)  # fmt: skip


@register_stage(
    "prune-magnitude",
    PruneMagnitudeConfig,
    "one-shot unstructured pruning (magnitude, Wanda, SparseGPT)",
    load=lambda config, inputs: load_one_shot(config, inputs, masks=True, stream=config.stream),
    omit=("calibration_batch_size",),  # one example a batch
)
def run_prune_magnitude(context: StageContext, config: PruneMagnitudeConfig) -> StageResult:
    """Zero the lowest-scored weights of ``context.model`` in place; its masks (the input's, grown) are
    the result's. Wanda and SparseGPT calibrate on ``context.calibration`` or, without it, on examples
    drawn from ``context.data``'s training split."""
    from prunekit.memory import peak_rss_mb

    pruning = config.pruning
    if config.stream:
        if context.model is not None:
            raise ConfigError("stream: prunes a model folder a layer at a time; for one on disk call "
                              "prunekit.prune_streamed(folder, out, ...)")  # fmt: skip
        return _run_streamed(context, config)
    if context.resume:
        raise ConfigError("--resume: only a --stream run keeps progress to resume")
    batches, record = None, {}
    if config.needs_data:
        batches, record = _calibration(context, config.draw(_text(context)), example_batches,
                                       f"--importance {pruning.importance}")  # fmt: skip
    started = time.perf_counter()
    masks = prune_magnitude(context.model, pruning, batches, current=context.masks)
    seconds, peak = round(time.perf_counter() - started, 1), peak_rss_mb()  # before evaluation adds its own
    layer_sparsities = None
    if pruning.owl:
        from prunekit.adapters import get_adapter

        layer_sparsities = masks.sparsity_per_prefix(get_adapter(context.model).layer_prefixes())
    fields = {**_magnitude_fields(pruning, record, layer_sparsities), "prune_seconds": seconds, "peak_rss_mb": peak}
    return StageResult("prune", context.model, context.tokenizer, fields, masks=masks, save_format=config.save_format)


def _magnitude_fields(pruning: MagnitudeConfig, record: dict, layer_sparsities: list | None) -> dict:
    """``prune-magnitude``'s summary fields that say how it pruned."""
    fields = dict(method="magnitude", importance=pruning.importance, scope=pruning.scope, pattern=pruning.pattern,
                  **record)  # fmt: skip
    if pruning.layer_by_layer:
        fields["within_layer"] = pruning.within_layer
    if pruning.importance == "sparsegpt":
        fields.update(block_size=pruning.block_size, dampening=pruning.dampening, fit_to=pruning.fit_to)
    if pruning.owl:
        fields["owl"] = dict(threshold=pruning.owl_threshold, spread=pruning.owl_spread,
                             layer_sparsities=layer_sparsities)  # fmt: skip
    return fields


STREAM_SETTINGS = "prunekit-stream.json"  # a streamed run's settings in its staging folder, for --resume


def _run_streamed(context: StageContext, config: PruneMagnitudeConfig) -> StageResult:
    """``--stream``: prune the model folder layer by layer into a staging folder beside ``context.out``
    (``context.resume`` continues it), which replaces ``context.out`` when all is written."""
    import torch

    from prunekit.devices import DTYPES
    from prunekit.evaluation import make_summary
    from prunekit.io import check_output_dir, recover_output_dir, replace_dir, staging_dir, write_json_atomic
    from prunekit.memory import peak_rss_mb
    from prunekit.methods.streamed import prune_streamed
    from prunekit.models import weights_size_bytes

    pruning, runtime, out = config.pruning, config.runtime, Path(context.out)
    recover_output_dir(out)
    check_output_dir(out, context.overwrite, [("--model", context.model_path), ("--data", config.data.data)])
    settings = {"model": context.model_path, "config": asdict(config)}
    staging = staging_dir(out, settings, STREAM_SETTINGS, context.resume, context.overwrite)
    batches, record = None, {}
    if config.needs_data:
        batches, record = _calibration(context, config.draw(_text(context)), example_batches,
                                       f"--importance {pruning.importance}")  # fmt: skip
    device = runtime.torch_device()
    started = time.perf_counter()
    task = context.data.task if context.data is not None and context.data.task.causal_lm else None
    fields = prune_streamed(context.model_path, staging, pruning, batches, task=task, device=device,
                            dtype=runtime.torch_dtype(), resume=context.resume,
                            save_dtype=DTYPES[runtime.save_dtype] if runtime.save_dtype else None)  # fmt: skip
    seconds = round(time.perf_counter() - started, 1)
    context.tokenizer.save_pretrained(staging)
    layer_sparsities = fields.pop("layer_sparsities", None)
    memory = {"peak_rss_mb": peak_rss_mb()}
    if device.type == "cuda":
        memory["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    (staging / STREAM_SETTINGS).unlink()
    summary = make_summary(
        "prune", context.model_name, context.task_name, model_path=context.model_path,
        **_magnitude_fields(pruning, record, layer_sparsities), prune_seconds=seconds, **memory,
        size_bytes=weights_size_bytes(staging), **fields, **runtime.record(device),
    )  # fmt: skip
    write_json_atomic(staging / "summary.json", summary)
    replace_dir(staging, out)
    return StageResult("prune", None, context.tokenizer, save_format="written", summary=summary)


@dataclass
class PruneStructuredConfig:
    """``prune-structured``: what to remove (``StructuredConfig``), how calibration examples are drawn,
    and an optional corpus whose tokens alone the vocabulary keeps."""

    pruning: StructuredConfig = section(StructuredConfig)
    calibration: CalibrationConfig = section(CalibrationConfig)
    vocab_from: str | None = option(
        None, "keep only tokens used by this corpus: a dataset (its train split) or .txt file"
    )
    data: DataConfig = section(DataConfig)
    runtime: DeviceConfig = section(DeviceConfig)

    def draw(self, text: bool) -> CalibrationConfig:
        """The calibration draw, its defaults resolved (``text``: the data is a text corpus)."""
        return replace(self.calibration, samples=self.calibration.samples or (UNIT_WINDOWS if text else UNIT_EXAMPLES))

    @property
    def needs_data(self) -> bool:
        from prunekit.importance.structured import NEEDS_DATA

        pruning = self.pruning
        units = pruning.prunes_units and (pruning.importance in NEEDS_DATA or pruning.reconstruct)
        return units or pruning.layers is not None


@register_stage(
    "prune-structured",
    PruneStructuredConfig,
    "one-shot removal of heads, FFN neurons, layers",
    load=lambda config, inputs: load_one_shot(config, inputs, masks=False),
)
def run_prune_structured(context: StageContext, config: PruneStructuredConfig) -> StageResult:
    """Remove heads, FFN neurons, layers (and unused vocabulary) from ``context.model`` in place; scores
    that need data use ``context.calibration`` or labelled batches drawn from ``context.data``."""
    from prunekit.methods.speed import latency_table_for
    from prunekit.models import count_parameters
    from prunekit.pruning.vocabulary import corpus_token_ids, prune_vocabulary, vocabulary_report

    model, tokenizer = context.model, context.tokenizer
    length = context.evaluation.max_length
    pruning = replace(config.pruning, flops_seq_len=length)
    pruning.validate(len(_layers(model)))
    if pruning.latency_aware and not pruning.prunes_units:
        raise ConfigError("--latency-aware allocates heads and neurons: pass --heads, --ffn or a budget")
    if config.vocab_from and context.calibration is not None:
        raise ConfigError("vocab_from with calibration batches: their token ids would not survive the new "
                          "vocabulary; pass calibration as texts or data")  # fmt: skip
    params_before, _ = count_parameters(model)
    vocabulary = {}
    if config.vocab_from:
        vocab_before = model.get_input_embeddings().num_embeddings
        texts = _corpus_texts(config.vocab_from, context.encoding)
        tokenizer, kept = prune_vocabulary(model, tokenizer, corpus_token_ids(tokenizer, texts))
        vocabulary = vocabulary_report(vocab_before, kept, model.get_input_embeddings().embedding_dim)
    if pruning.latency_aware:
        pruning.latency = latency_table_for(model, pruning.round_to, pruning.latency_table)
    batches, record = [], {}
    if config.needs_data:  # drawn with the tokenizer the vocabulary left
        batches, record = _calibration(replace(context, tokenizer=tokenizer), config.draw(_text(context)),
                                       labelled_batches, f"--importance {pruning.importance} / --layers")  # fmt: skip
        criteria = {pruning.importance} if pruning.prunes_units else set()
        criteria |= {pruning.layer_importance} if pruning.layers is not None else set()
        if criteria & NEEDS_LABELS and not all("labels" in batch for batch in batches):
            raise ConfigError(f"{', '.join(sorted(criteria & NEEDS_LABELS))} scores need labelled batches (a "
                              "'labels' tensor): pass labelled data")  # fmt: skip
    kept = prune_structured(model, pruning, batches)
    fields = dict(
        method="structured",
        importance=pruning.importance if pruning.prunes_units else None,
        layer_importance=pruning.layer_importance if pruning.layers is not None else None,
        scope=pruning.scope,
        **record,
        **({"latency_table": asdict(pruning.latency)} if pruning.latency else {}),
        params_before=params_before,
        **vocabulary,
        **kept,
    )
    return StageResult("prune", model, tokenizer, fields, save_format="pruned")


def _calibration(context: StageContext, calibration: CalibrationConfig, draw, what: str) -> tuple[list, dict]:
    """The stage's calibration batches and how they were drawn: given ones as they are (labelled with
    their own tokens for a causal LM when they carry no labels), else drawn from the data."""
    if context.calibration is not None:
        batches = list(context.calibration)
        if _is_causal(context.model):
            batches = [batch if "labels" in batch else {**batch, "labels": batch["input_ids"]} for batch in batches]
        return batches, {"calibration": {"batches": len(batches), "given": True}}
    data = context.calibration_data if context.calibration_data is not None else context.data
    if data is None or data.train is None:
        raise ConfigError(f"{what} needs calibration data: pass --data")
    return draw(replace(context, data=data), calibration), {"calibration": calibration.record(data.task.causal_lm)}


def _is_causal(model) -> bool:
    return type(model).__name__.endswith("ForCausalLM")


def _text(context: StageContext) -> bool:
    """Whether calibration comes from a text corpus (a causal LM's)."""
    data = context.calibration_data if context.calibration_data is not None else context.data
    return data.task.causal_lm if data is not None else _is_causal(context.model)


def _layers(model) -> list:
    from prunekit.adapters import get_adapter

    return get_adapter(model).layer_list()


def _corpus_texts(source: str, encoding: str = "utf-8") -> list:
    """Sentences (or sentence pairs) of ``source``: a .txt file (a sentence per line) or a dataset."""
    from prunekit.data import load_task_data

    path = Path(source)
    if path.suffix == ".txt":
        try:
            return [line for line in path.read_text(encoding=encoding).splitlines() if line.strip()]
        except OSError as err:
            raise DataError(f"--vocab-from {source}: cannot read ({err.strerror})") from None
        except UnicodeDecodeError as err:
            reason = f"not valid {encoding} text ({err.reason}); pass --encoding"
            raise DataError(f"--vocab-from {source}: {reason}") from None
    train = load_task_data(source, need_eval=False, encoding=encoding).train
    return list(zip(train.text_a, train.text_b)) if train.text_b else list(train.text_a)
