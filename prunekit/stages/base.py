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

from prunekit.devices import DTYPES, model_device, placement_record
from prunekit.errors import ConfigError, did_you_mean
from prunekit.evaluation import evaluation_fields, make_summary, model_size
from prunekit.memory import peak_rss_mb
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

    model: PreTrainedModel | None  # None for a stage that works on many (bench: the run's models)
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
    teacher: PreTrainedModel | None = None  # soft targets for a training stage
    train_size: int | None = None  # training examples (a text corpus: blocks of max_length tokens)
    scratch: str | None = None  # the Trainer's work folder, kept until the result is saved
    loaded_fields: dict[str, Any] = field(default_factory=dict)  # summary keys the loading decided
    runtime: Any = None  # the DeviceConfig the stage runs under: recorded in the summary, its save_dtype applied
    out: str | None = None  # for a stage that writes its own folder (lottery's rounds): where, and how
    resume: bool = False
    overwrite: bool = False

    @property
    def task_name(self) -> str | None:
        return self.data.task.name if self.data is not None else self.task


SAVE_FORMATS = ("dense", "sparse", "pruned", "stage", "written")


@dataclass
class StageResult:
    """A stage's outcome. ``fields`` are the stage's own summary keys; ``save_format`` says how the model
    is written: ``dense`` (``save_pretrained`` and its masks), ``sparse`` (prunekit's bitmask format) or
    ``pruned`` (``save_pruned``: a config that matches structurally pruned shapes), ``stage`` (a training
    stage's model, masks and LoRA adapter: ``methods.stage.save_stage``), ``written`` (the stage wrote its
    folder and summary itself, or made a summary of many models: bench), or None when the stage makes no
    model. ``summary`` is filled in by ``finish``."""

    kind: str
    model: PreTrainedModel | None
    tokenizer: PreTrainedTokenizerBase | None
    fields: dict[str, Any] = field(default_factory=dict)
    masks: MaskSet | None = None
    save_format: str | None = "dense"  # None: the stage makes no model (evaluate): nothing to save
    summary: dict[str, Any] = field(default_factory=dict)
    is_main: bool = True  # False in every torchrun process but the first: those write nothing
    training: Any = None  # a training stage's ``methods.stage.TrainingResult`` (its LoRA adapter is saved too)

    def save(self, folder: str | os.PathLike) -> dict[str, Any]:
        """Write the model folder (weights, config, tokenizer, masks); returns summary fields it decides."""
        from prunekit.pruned_models import save_pruned
        from prunekit.pruning.sparse_format import save_sparse

        folder = Path(folder)
        extra: dict[str, Any] = {}
        if self.save_format == "stage":
            from prunekit.methods.stage import save_stage

            return {"save_format": save_stage(self.training, self.tokenizer, folder)}
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


@dataclass
class StageInputs:
    """What a stage is given besides its config when it starts from saved folders (the command line,
    recipes): the model it starts from, and where its result goes."""

    model: str | None  # a model folder or an alias (minilm, smollm2); distill's student may be built instead
    out: str | None = None  # the result's folder (lottery and export write there themselves)
    resume: bool = False  # continue a stopped stage that keeps its own progress (lottery's rounds)
    overwrite: bool = False
    run_models: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # bench: the run's models, roles


@dataclass(frozen=True)
class Stage:
    """A registered stage: its recipe name, its config class, the function that builds its context from
    saved folders (``load``), the one that runs it, and options its recipe name fixes (``lora`` is
    ``finetune`` with ``lora: true``)."""

    name: str
    config: type
    run: Callable[[StageContext, Any], StageResult]
    load: Callable[[Any, StageInputs], StageContext]
    help: str
    makes_model: bool = True
    trains: bool = False  # it runs the Trainer: a work folder, checkpoints, every torchrun process takes part
    fixed: tuple[tuple[str, Any], ...] = ()
    omit: tuple[str, ...] = ()  # options of its config it does not take (they are set for it)

    @property
    def options(self) -> list[tuple[str, str, dict, Any]]:
        """``(key, flag, spec, default)`` of every option the stage takes, its fixed ones aside."""
        from prunekit.options import leaf_options, option_key

        left = {*dict(self.fixed), *self.omit}
        return [(option_key(flag), flag, spec, field.default) for _, field, flag, spec in leaf_options(self.config)
                if option_key(flag) not in left]  # fmt: skip

    def build_config(self, options: dict[str, Any], given: Iterable[str] | None = None) -> Any:
        """The stage's config from options named as recipe keys (a fixed one may not be given); an option
        in ``given`` (default: all of ``options``) that has no effect in the mode chosen is an error."""
        from prunekit.options import config_from_options

        for key in (*dict(self.fixed), *self.omit):
            if key in options:
                raise ConfigError(f"{key}: not an option of stage {self.name} (it sets it itself)")
        return config_from_options(self.config, {**options, **dict(self.fixed)}, owner=self.name, given=given)


STAGES: dict[str, Stage] = {}


def register_stage(
    name: str,
    config: type,
    help: str,
    load: Callable[[Any, StageInputs], StageContext],
    *,
    makes_model: bool = True,
    trains: bool = False,
    fixed: dict[str, Any] | None = None,
    omit: tuple[str, ...] = (),
):
    """Decorator: file ``run(context, config)`` in ``STAGES`` as the stage ``name``."""

    def register(run: Callable[[StageContext, Any], StageResult]) -> Callable[[StageContext, Any], StageResult]:
        add_stage(Stage(name, config, run, load, help, makes_model, trains, tuple((fixed or {}).items()), omit))
        return run

    return register


def add_stage(stage: Stage) -> None:
    """Register ``stage`` (a second name for the same run, e.g. ``lora``, is a second ``Stage``)."""
    if stage.name in STAGES:
        raise ValueError(f"stage {stage.name!r} is registered twice")
    STAGES[stage.name] = stage


def get_stage(name: str) -> Stage:
    if name not in STAGES:
        raise ConfigError(f"stage {name!r}: not a stage{did_you_mean(name, list(STAGES))}; expected one of "
                          f"{', '.join(STAGES)}")  # fmt: skip
    return STAGES[name]


def execute(
    stage: Stage, config: Any, inputs: StageInputs, checkpoint_dir: str | None = None, kind: str | None = None
) -> dict[str, Any]:
    """Run a stage from saved folders: load its context, run it (a training stage in ``checkpoint_dir``,
    where it keeps resumable checkpoints, or a scratch folder), save the result to ``inputs.out`` with its
    summary.json. Returns the summary ({} in every torchrun process but the first)."""
    from prunekit.io import work_dir

    context = stage.load(config, inputs)
    if not stage.trains:
        return finish(context, stage.run(context, config), inputs.out, inputs.overwrite)
    if checkpoint_dir is not None:
        Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
        context.scratch = checkpoint_dir
        return finish(context, stage.run(context, config), inputs.out, inputs.overwrite)
    with work_dir(kind or stage.name) as scratch:
        context.scratch = scratch
        return finish(context, stage.run(context, config), inputs.out, inputs.overwrite)


def finish(
    context: StageContext, result: StageResult, out: str | os.PathLike | None = None, overwrite: bool = False
) -> dict[str, Any]:
    """The tail every stage shares: evaluate ``result.model`` on the context's data, and with ``out``
    save it atomically (a temp folder swapped in whole) with its ``summary.json``. Returns the summary
    (also kept on ``result.summary``), the same keys with or without ``out`` (``size_bytes`` None
    without; for a stage that makes no model, the input folder's)."""
    from prunekit.io import atomic_output_dir, write_json_atomic

    if not result.is_main:
        return {}
    if result.save_format == "written":  # the stage saved its folder and summary itself
        return result.summary
    evaluation = evaluation_fields(context.evaluation, result.model, result.tokenizer, context.data,
                                   context.evaluation.batch_size)  # fmt: skip
    header = dict(kind=result.kind, model=context.model_name, task=context.task_name, model_path=context.model_path)

    def summary_for(folder: Path | None, extra: dict) -> dict[str, Any]:
        fields = {**evaluation, **model_size(result.model, folder), **result.fields, **extra}
        if result.masks is not None:
            fields.update(result.masks.report())
        if context.runtime is not None:
            fields.update(context.runtime.record(model_device(result.model)), **placement_record(result.model))
        fields.setdefault("peak_rss_mb", peak_rss_mb())  # a stage that measured its own phase keeps it
        return make_summary(**header, **fields)

    if context.runtime is not None and context.runtime.save_dtype and result.save_format not in (None, "written"):
        result.model.to(DTYPES[context.runtime.save_dtype])

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
