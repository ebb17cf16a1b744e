"""What stages read besides the model: task data for a model (labelled data in its label order, or a
text corpus for a causal LM) and calibration batches drawn from it — or given directly, from Python,
as texts or as tokenized batches."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from transformers import PretrainedConfig, PreTrainedTokenizerBase

from prunekit.errors import ConfigError
from prunekit.options import option, positive_int
from prunekit.options import seed as seed_number
from prunekit.stages.base import Batch, EvaluationSettings, StageContext, StageInputs

DEFAULT_MAX_LENGTH, LM_MAX_LENGTH = 128, 512  # tokens per example; per perplexity window of a text corpus


@dataclass
class DataConfig:
    """Where a stage's data comes from and how it is read (the ``--data`` flags, declared once)."""

    data: str | None = option(None, "GLUE task folder, CSV/TSV/JSONL file or folder, or hub dataset name")
    task: str | None = option(None, "GLUE task name when the folder name does not say it (sst2, mrpc, ...)")
    train: str | None = option(None, "training file (overrides the one in --data)")
    eval: str | None = option(None, "evaluation file (overrides the one in --data)")
    text_columns: str | None = option(None, "your own data: one or two text columns, 'a' or 'a,b'")
    label_column: str | None = option(None, "your own data: the label column")
    no_header: bool = option(False, "files have no header; columns are 0-based indices", switch=True)
    regression: bool | None = option(
        None, "float labels: regression (detected when labels are non-integer numbers)", switch=True
    )
    max_eval_samples: int | None = option(None, "evaluate on the first N examples only", parse=positive_int)
    max_length: int | None = option(
        None,
        f"tokens per example (default {DEFAULT_MAX_LENGTH}); for a text corpus, tokens per perplexity window "
        f"(default {LM_MAX_LENGTH})",
        parse=positive_int,
    )
    stride: int | None = option(
        None, "text corpus: a perplexity window starts every N tokens (default: --max-length, no overlap)",
        parse=positive_int,
    )  # fmt: skip
    max_eval_tokens: int | None = option(
        None, "text corpus: score the first N tokens of the dev text only", parse=positive_int
    )
    encoding: str = option("utf-8", "text encoding of the data files")
    skip_bad_rows: bool = option(
        False, "skip (and count) malformed rows instead of stopping at the first one", switch=True
    )

    def task_options(self) -> dict[str, Any]:
        """What ``load_data`` takes besides the data path."""
        return dict(task=self.task, train_file=self.train, eval_file=self.eval, text_columns=self.text_columns,
                    label_column=self.label_column, no_header=self.no_header, regression=self.regression,
                    max_eval_samples=self.max_eval_samples, encoding=self.encoding,
                    skip_bad_rows=self.skip_bad_rows)  # fmt: skip


def default_max_length(data: DataConfig, model_configs: Iterable[PretrainedConfig]) -> int:
    """``--max-length``'s default: 512 tokens a perplexity window on a text corpus, 128 an example, within
    every model's positions."""
    from prunekit.data.text import is_text_corpus
    from prunekit.models import max_positions

    default = LM_MAX_LENGTH if is_text_corpus(data.data, data.train, data.eval) else DEFAULT_MAX_LENGTH
    limits = [max_positions(config) for config in model_configs]
    return min([default, *(limit for limit in limits if limit is not None)])


def resolved_data(data: DataConfig, model_configs: Iterable[PretrainedConfig]) -> DataConfig:
    """The data settings with ``max_length``'s default resolved for the models."""
    if data.max_length is not None:
        return data
    return replace(data, max_length=default_max_length(data, model_configs))


def evaluation_settings(data: DataConfig) -> EvaluationSettings:
    """How a stage's result is evaluated, from the data settings."""
    return EvaluationSettings(max_length=data.max_length, stride=data.stride, max_eval_tokens=data.max_eval_tokens)


MAGNITUDE_SAMPLES = 128  # SparseGPT's and Wanda's calibration draw: 128 examples (text: windows)
UNIT_EXAMPLES, UNIT_WINDOWS = 512, 128  # unit scores' draw (measured: bench/peer_setting.py)


@dataclass
class CalibrationConfig:
    """How calibration examples are drawn from the training split of the data."""

    samples: int | None = option(
        None,
        "calibration examples (text corpus: windows); default: the method's own (128 for wanda / sparsegpt and for "
        f"unit scores on text, {UNIT_EXAMPLES} labelled examples for unit scores)",
        parse=positive_int,
        flag="--calibration-samples",
    )
    length: int = option(
        512,
        "text corpus: tokens per calibration window, drawn at random offsets of the training text",
        parse=positive_int,
        flag="--calibration-length",
    )
    seed: int = option(
        42,
        "seed of the random draw of calibration examples from the training split",
        parse=seed_number,
        flag="--calibration-seed",
    )
    batch_size: int = option(32, "calibration examples per batch for unit scores", parse=positive_int,
                             flag="--calibration-batch-size")  # fmt: skip

    def record(self, text: bool) -> dict[str, Any]:
        """How the examples were drawn, for summary.json."""
        drawn = {"samples": self.samples, "seed": self.seed}
        return {**drawn, "length": self.length} if text else drawn


def load_data(
    config: PretrainedConfig,
    data: str | None,
    *,
    where: str = "--model",
    need_train: bool = False,
    need_eval: bool = True,
    text: bool = True,
    train_file: str | None = None,
    eval_file: str | None = None,
    encoding: str = "utf-8",
    **task_options: Any,
):
    """Task data for the model whose config is ``config``: labelled data read with the model's own label
    order (and regression flag) and checked against its head, or — with ``text`` (the caller handles
    language modelling) — a plain-text corpus for a causal LM. ``where`` names the model in messages;
    ``task_options`` go to ``load_task_data``."""
    from prunekit.data import load_task_data
    from prunekit.data.text import is_text_corpus, load_text_corpus
    from prunekit.models import is_causal_lm, task_label_names

    if text and is_text_corpus(data, train_file, eval_file):
        if not is_causal_lm(config):
            raise ConfigError(
                f"{where}: not a causal language model ({', '.join(config.architectures or [])}); "
                "perplexity on a text corpus needs one, e.g. --model smollm2"
            )
        return load_text_corpus(data, train_file=train_file, eval_file=eval_file, need_train=need_train,
                                need_eval=need_eval, encoding=encoding)  # fmt: skip
    if is_causal_lm(config):
        raise ConfigError(
            f"{where}: a causal language model; pass a text corpus (a .txt file, or a folder with train.txt and "
            "dev.txt) as --data, or fine-tune a classification head first"
        )
    if config.problem_type == "regression" and task_options.get("regression") is None:
        task_options["regression"] = True
    loaded = load_task_data(data, need_train=need_train, need_eval=need_eval, label_names=task_label_names(config),
                            train_file=train_file, eval_file=eval_file, encoding=encoding, **task_options)  # fmt: skip
    if config.num_labels != loaded.task.num_labels:
        raise ConfigError(
            f"{where}: its head has {config.num_labels} output(s) but task {loaded.task.name!r} needs "
            f"{loaded.task.num_labels}; fine-tune it on this task first (prunekit finetune)"
        )
    return loaded


def example_batches(context: StageContext, calibration: CalibrationConfig) -> list[Batch]:
    """Calibration batches of one example each, with no labels (activation statistics: no padding tokens
    in them): windows of a text corpus, or the task's examples tokenized one by one."""
    from prunekit.data.text import calibration_blocks

    data, tokenizer = context.data, context.tokenizer
    if data.task.causal_lm:
        return calibration_blocks(tokenizer, data.train, calibration.samples, calibration.length, calibration.seed)
    pairs = zip(data.train.text_a, data.train.text_b or [None] * len(data.train))
    length = context.evaluation.max_length
    return [tokenizer(a, b, truncation=True, max_length=length, return_tensors="pt") for a, b in pairs]


def labelled_batches(context: StageContext, calibration: CalibrationConfig) -> list[Batch]:
    """Labelled calibration batches that gradient-based unit scores need: the task's examples, or windows
    of a text corpus labelled with their own tokens (the language-modelling loss)."""
    from prunekit.data import encode_batches
    from prunekit.data.text import calibration_batches

    data, tokenizer, size = context.data, context.tokenizer, calibration.batch_size
    if data.task.causal_lm:
        return calibration_batches(tokenizer, data.train, calibration.samples, calibration.length, calibration.seed,
                                   size)  # fmt: skip
    return encode_batches(data.train, tokenizer, context.evaluation.max_length, data.task.is_regression, size)


def given_batches(
    calibration: str | os.PathLike | Sequence[str] | Iterable[Batch] | None,
    tokenizer: PreTrainedTokenizerBase | None,
    max_length: int,
) -> list[Batch] | None:
    """Calibration given from Python: texts (each tokenized as a batch of one, cut at ``max_length``
    tokens) or tokenized batches, as they are. A path is data: the caller loads it with ``load_data``."""
    if calibration is None or isinstance(calibration, (str, os.PathLike)):
        return None
    items = list(calibration)
    if not items:
        raise ConfigError("calibration: an empty list; pass texts, tokenized batches or a data path")
    if all(isinstance(item, Mapping) for item in items):  # a tokenizer's BatchEncoding too
        return [dict(item) for item in items]
    if not all(isinstance(item, str) for item in items):
        raise ConfigError("calibration: expected a list of texts, a list of tokenized batches (dicts of tensors) "
                          "or a data path")  # fmt: skip
    if tokenizer is None:
        raise ConfigError("calibration given as texts: pass tokenizer= as well")
    return [tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt") for text in items]


def load_saved(config: Any, inputs: StageInputs, trained_head: bool = False) -> StageContext:
    """A stage's context from a saved model as it is: the model (a causal LM for a text corpus) on the
    config's ``runtime`` device and dtype, its masks, and — when the config has a ``data`` section that
    names data — the data read for it. The loader of a stage that needs nothing more
    (``register_stage(..., load=load_saved)``)."""
    from prunekit.models import load_config, load_model, resolve_model, task_of
    from prunekit.pruning.masks import MaskSet

    folder = resolve_model(inputs.model, "--model")
    data_config = getattr(config, "data", None)
    data = None
    if data_config is not None:
        data_config = resolved_data(data_config, [load_config(folder)])
        if data_config.data or data_config.eval:
            data = load_data(load_config(folder), data_config.data, where=f"--model {inputs.model}", text=True,
                             **data_config.task_options())  # fmt: skip
    runtime = getattr(config, "runtime", None)  # without one (export): the CPU, float32
    where = dict(dtype=runtime.torch_dtype(), device=runtime.torch_device()) if runtime is not None else {}
    offload = getattr(config, "offload", None)  # evaluate, bench: big-model loading
    where.update(offload.load_options() if offload is not None else {})
    model, tokenizer = load_model(inputs.model, data.task if data is not None and data.task.causal_lm else None,
                                  trained_head=trained_head, **where)  # fmt: skip
    return StageContext(model, tokenizer, data, masks=MaskSet.load(folder, model), model_name=inputs.model,
                        model_path=folder, task=task_of(folder), out=inputs.out, runtime=runtime,
                        evaluation=evaluation_settings(data_config) if data_config else EvaluationSettings(),
                        encoding=data_config.encoding if data_config else "utf-8")  # fmt: skip
