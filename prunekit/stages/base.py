"""A stage: one method run on an in-memory model — the unit the command line, recipes and the Python
API share.

A stage is a config dataclass (its options, each declared once with ``prunekit.options.option``) and a
``run(context, config) -> StageResult``; ``register_stage`` files it in ``STAGES`` under its recipe
name. The context carries what the stage works on (model, tokenizer, data, calibration batches, the
model's masks); the result is the changed model and the stage's own summary fields. ``finish`` is the
one tail every stage shares: evaluate the result, and (given a folder) save it atomically with its
``summary.json``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from prunekit.errors import ConfigError, did_you_mean
from prunekit.evaluation import evaluation_fields, make_summary, model_size
from prunekit.pruning.masks import MaskSet

Batch = dict[str, torch.Tensor]


@dataclass
class EvaluationSettings:
    """How a result is evaluated: tokens per example (a text corpus: per perplexity window), the windows'
    stride, how much of the dev text is scored, and the batch size (None: the evaluator's own)."""

    max_length: int = 128
    stride: int | None = None
    max_eval_tokens: int | None = None
    batch_size: int | None = None


@dataclass
class StageContext:
    """What a stage works on. ``model_name`` is the model as the user named it and ``model_path`` the
    folder it came from (None for a model built in memory): both go into the summary."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase | None = None
    data: Any = None  # TaskData or TextCorpus: evaluation (and training) data, or None
    calibration: Iterable[Batch] | None = None  # batches a one-shot method scores with, or None
    calibration_data: Any = None  # data to draw calibration batches from, when it is not ``data``
    masks: MaskSet | None = None  # the input model's unstructured masks: a new stage only prunes more
    model_name: str = "model"
    model_path: str | None = None
    task: str | None = None  # the task name to record when there is no data (a folder's summary says it)
    encoding: str = "utf-8"  # of the text files a stage reads itself (a vocabulary corpus)
    evaluation: EvaluationSettings = field(default_factory=EvaluationSettings)

    @property
    def task_name(self) -> str | None:
        return self.data.task.name if self.data is not None else self.task


SAVE_FORMATS = ("dense", "sparse", "pruned")


@dataclass
class StageResult:
    """A stage's outcome. ``fields`` are the stage's own summary keys; ``save_format`` says how the model
    is written: ``dense`` (``save_pretrained`` and its masks), ``sparse`` (prunekit's bitmask format) or
    ``pruned`` (``save_pruned``: a config that matches structurally pruned shapes), or None when the stage
    makes no model. ``summary`` is filled in by ``finish``."""

    kind: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase | None
    fields: dict[str, Any] = field(default_factory=dict)
    masks: MaskSet | None = None
    save_format: str | None = "dense"  # None: the stage makes no model (evaluate): nothing to save
    summary: dict[str, Any] = field(default_factory=dict)

    def save(self, folder: str | os.PathLike) -> dict[str, Any]:
        """Write the model folder (weights, config, tokenizer, masks); returns summary fields it decides."""
        from prunekit.pruned_models import save_pruned
        from prunekit.pruning.sparse_format import save_sparse

        folder = Path(folder)
        extra: dict[str, Any] = {}
        if self.save_format == "sparse":
            save_sparse(self.model, self.masks, folder)  # its bitmasks are the masks: no separate masks file
        elif self.save_format == "pruned":
            extra["save_format"] = save_pruned(self.model, folder)
        else:
            self.model.save_pretrained(folder)
            if self.masks is not None:
                self.masks.save(folder)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(folder)
        return extra


@dataclass(frozen=True)
class Stage:
    """A registered stage: its recipe name, its config class, what it does and the function that does it."""

    name: str
    config: type
    run: Callable[[StageContext, Any], StageResult]
    help: str
    makes_model: bool = True


STAGES: dict[str, Stage] = {}


def register_stage(name: str, config: type, help: str, makes_model: bool = True):
    """Decorator: file ``run(context, config)`` in ``STAGES`` as the stage ``name``."""

    def register(run: Callable[[StageContext, Any], StageResult]) -> Callable[[StageContext, Any], StageResult]:
        if name in STAGES:
            raise ValueError(f"stage {name!r} is registered twice")
        STAGES[name] = Stage(name, config, run, help, makes_model)
        return run

    return register


def get_stage(name: str) -> Stage:
    if name not in STAGES:
        raise ConfigError(f"stage {name!r}: not a stage{did_you_mean(name, list(STAGES))}; expected one of "
                          f"{', '.join(STAGES)}")  # fmt: skip
    return STAGES[name]


def finish(
    context: StageContext, result: StageResult, out: str | os.PathLike | None = None, overwrite: bool = False
) -> dict[str, Any]:
    """The tail every stage shares: evaluate ``result.model`` on the context's data, and with ``out``
    save it atomically (a temp folder swapped in whole) with its ``summary.json``. Returns the summary
    (also kept on ``result.summary``), the same keys with or without ``out`` (``size_bytes`` None
    without; for a stage that makes no model, the input folder's)."""
    from prunekit.io import atomic_output_dir, write_json_atomic

    evaluation = evaluation_fields(context.evaluation, result.model, result.tokenizer, context.data,
                                   context.evaluation.batch_size)  # fmt: skip
    header = dict(kind=result.kind, model=context.model_name, task=context.task_name, model_path=context.model_path)

    def summary_for(folder: Path | None, extra: dict) -> dict[str, Any]:
        fields = {**result.fields, **extra, **evaluation, **model_size(result.model, folder)}
        if result.masks is not None:
            fields.update(result.masks.report())
        return make_summary(**header, **fields)

    if result.save_format is None:  # nothing made: the size is the input folder's
        result.summary = summary_for(Path(context.model_path) if context.model_path else None, {})
        return result.summary
    if out is None:
        result.summary = summary_for(None, {})
        return result.summary
    with atomic_output_dir(out, overwrite) as tmp:
        result.summary = summary_for(tmp, result.save(tmp))
        write_json_atomic(tmp / "summary.json", result.summary)
    return result.summary
