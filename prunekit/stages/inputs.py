"""What stages read besides the model: task data for a model (labelled data in its label order, or a
text corpus for a causal LM) and calibration batches drawn from it — or given directly, from Python,
as texts or as tokenized batches."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from transformers import PretrainedConfig, PreTrainedTokenizerBase

from prunekit.errors import ConfigError
from prunekit.options import option, positive_int
from prunekit.options import seed as seed_number
from prunekit.stages.base import Batch, StageContext

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
