"""The Python API: prunekit's stages on in-memory transformers models — the same code, options and
``summary.json`` keys as the command line (``prunekit prune magnitude`` is ``prune_magnitude``).

Options are the commands' options under their recipe names (``--calibration-samples`` is
``calibration_samples=``); each is declared once, on the stage's config (``prunekit.stages``).

>>> import prunekit
>>> from transformers import AutoModelForSequenceClassification, AutoTokenizer
>>> model = AutoModelForSequenceClassification.from_pretrained("runs/sst2")  # doctest: +SKIP
>>> result = prunekit.prune_magnitude(model, sparsity=0.7)  # doctest: +SKIP
>>> result.summary["sparsity"], result.model is model  # doctest: +SKIP
(0.7, True)
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from prunekit.pruning.masks import MaskSet
from prunekit.stages import STAGES, StageContext, StageResult, finish
from prunekit.stages.inputs import given_batches, load_data

Data = str | os.PathLike | Any  # a data file or folder, or data loaded already (TaskData, TextCorpus)
Calibration = str | os.PathLike | Sequence[str] | Iterable[dict]


def prune_magnitude(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase | None = None,
    *,
    data: Data | None = None,
    calibration: Calibration | None = None,
    masks: MaskSet | None = None,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    **options: Any,
) -> StageResult:
    """Unstructured pruning of ``model`` in place: magnitude, Wanda or SparseGPT (``importance=``),
    global, per layer, per row or N:M (``sparsity=``, ``scope=``, ``pattern=``, ``targets=``,
    ``exclude=``, ``block_size=``, ``dampening=``). Returns the result: ``.model`` (the same model, its
    pruned weights zero), ``.masks`` and ``.summary`` (``summary.json``'s keys; with ``data``, evaluated
    on its evaluation split).

    Wanda and SparseGPT calibrate on ``calibration`` — texts, tokenized batches, or a data file or folder
    whose training split is drawn from (``calibration_samples=``, ``calibration_length=``,
    ``calibration_seed=``) — or, without it, on ``data``'s training split. ``masks``: the model's own
    masks, which the new ones only add to. ``out``: also save it there as the command does.

    >>> result = prune_magnitude(model, tokenizer, data="data/SST-2", importance="wanda")  # doctest: +SKIP
    """
    return _run("prune-magnitude", model, tokenizer, data, calibration, masks, out, overwrite, options)


def prune_streamed(
    model: str | os.PathLike,
    out: str | os.PathLike,
    *,
    data: str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """``prune_magnitude`` for a model bigger than memory, from its folder to ``out``: one transformer layer
    at a time is read from the safetensors, pruned (``importance=`` magnitude per layer, Wanda or SparseGPT,
    N:M, OWL) and written as its own shard in the stored dtype; ``resume`` continues a killed run. The
    options are ``prune_magnitude``'s (``device=`` and ``dtype=`` where it works). Returns the summary
    (the result is not evaluated: load it with ``from_pretrained`` or evaluate it with ``evaluate``).

    >>> prune_streamed("llama-1b", "llama-1b-50", data="data/brown", importance="sparsegpt")  # doctest: +SKIP
    """
    from prunekit.stages import StageInputs, execute

    stage = STAGES["prune-magnitude"]
    config = stage.build_config({**options, "stream": True, **({"data": str(data)} if data is not None else {})})
    return execute(stage, config, StageInputs(str(model), out=str(out), resume=resume, overwrite=overwrite))


def prune_structured(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase | None = None,
    *,
    data: Data | None = None,
    calibration: Calibration | None = None,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    **options: Any,
) -> StageResult:
    """Remove attention heads, FFN neurons and layers from ``model`` in place (``heads=``, ``ffn=``,
    ``layers=``, ``params_budget=``, ``flops_budget=``, ``importance=``, ``scope=``, ``round_to=`` ...):
    it gets physically smaller and faster. Scores that need data (Taylor, the default) use labelled
    ``calibration`` batches or a data path's training split, or ``data``'s. Returns the result:
    ``.model`` (the same model, smaller; ``prunekit.save_pruned`` or ``out=`` saves it so that it
    reloads), ``.summary``.

    >>> result = prune_structured(model, tokenizer, data="data/SST-2", heads=0.5, ffn=0.5)  # doctest: +SKIP
    """
    return _run("prune-structured", model, tokenizer, data, calibration, None, out, overwrite, options)


def evaluate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, data: Data, **options: Any) -> dict[str, Any]:
    """``model`` scored on ``data``'s evaluation split with the task's official metric(s) (a causal LM:
    perplexity on a text corpus, in windows of ``max_length=`` tokens every ``stride=``, the first
    ``max_eval_tokens=``), as ``prunekit evaluate`` does (``batch_size=``, ``max_eval_samples=``,
    ``device=``, ``dtype=`` ...); returns its summary (``metrics``, ``main_metric``, sizes)."""
    from dataclasses import replace

    from prunekit.stages.inputs import evaluation_settings, resolved_data

    stage = STAGES["evaluate"]
    config = stage.build_config(options)
    model.to(device=config.runtime.torch_device(), dtype=config.runtime.torch_dtype())
    data_config = resolved_data(config.data, [model.config])
    settings = replace(evaluation_settings(data_config), batch_size=config.batch_size)
    context = StageContext(model, tokenizer, _load(model, data, data_config, "data", need_train=False),
                           model_name=_name(model), evaluation=settings, runtime=config.runtime)  # fmt: skip
    return finish(context, stage.run(context, config))


def finetune(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    data: Data,
    *,
    teacher: PreTrainedModel | None = None,
    masks: MaskSet | None = None,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    **options: Any,
) -> StageResult:
    """Fine-tune ``model`` on ``data``'s training split, as ``prunekit finetune`` does: every weight, or
    LoRA (``lora=True``, ``lora_r=`` ...), optionally pruning as it trains (``prune="magnitude"`` with
    ``sparsity=``; ``prune="adaptive"`` with ``heads=`` / ``ffn=``), with soft targets from ``teacher``
    (``alpha_kd=``, ``temperature=``), with the training options (``epochs=``, ``lr=``, ``batch_size=``,
    ``max_steps=``, ``seed=``, ``max_train_samples=`` ...). ``masks``: the model's own, held while it
    trains. Returns the result: ``.model`` (the trained model: LoRA merged, pruned units cut out),
    ``.summary`` (evaluated on ``data``'s evaluation split), ``.masks``.

    >>> result = finetune(model, tokenizer, "data/SST-2", lora=True, max_steps=300)  # doctest: +SKIP
    """
    if teacher is not None:
        options.setdefault("distill_from", _name(teacher))
    return _train("finetune", model, tokenizer, data, teacher, masks, out, overwrite, options)


def distill(
    student: PreTrainedModel,
    teacher: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    data: Data,
    *,
    masks: MaskSet | None = None,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    **options: Any,
) -> StageResult:
    """Train ``student`` on ``teacher``'s soft targets (``temperature=``, ``alpha_kd=``, ``alpha_ce=``),
    hidden states (``alpha_hidden=``, ``layer_map=``) and attention maps (``alpha_attn=``), as
    ``prunekit distill`` does, with the training and LoRA options of ``finetune``. Both models must share
    the tokenizer. Returns the result (``.summary`` has ``teacher_metrics``)."""
    options.setdefault("teacher", _name(teacher))
    return _train("distill", student, tokenizer, data, teacher, masks, out, overwrite, options)


@dataclass
class RunResult:
    """A finished ``prunekit.run``: its folder, one row per stage that made a model or a score, the report."""

    out: Path
    stages: list[dict[str, Any]]  # name, method, role, metric_name, metric, params, speedup (vs the parent), path
    report: tuple[Path, Path]  # report.md, report.html


def run(
    recipe: str | os.PathLike | dict,
    *,
    out: str | os.PathLike,
    model: str = "minilm",
    data: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    overrides: Sequence[str] = (),
    **defaults: Any,
) -> RunResult:
    """Run a recipe — a built-in name, a YAML file or a dict — as ``prunekit run`` does, in this process:
    its stages into ``out/NN-name/`` (resumable with ``resume``), then the report. ``defaults`` are options
    for every stage that takes them (``max_train_samples=2000``); ``overrides`` are ``--set`` strings
    (``"stages[1].heads=0.25"``). A stage that fails raises its error, naming the stage.

    >>> result = run("default", model="minilm", data="data/SST-2", out="runs/default", max_steps=300)  # doctest: +SKIP
    >>> [(row["name"], row["metric"]) for row in result.stages]  # doctest: +SKIP
    """
    from prunekit.errors import ConfigError
    from prunekit.io import check_output_dir, recover_output_dir
    from prunekit.models import load_config, resolve_model
    from prunekit.recipes.recipe import read_recipe
    from prunekit.recipes.run_folder import check_lengths, is_main_process, publish_run, recipe_inputs
    from prunekit.recipes.runner import run_recipe
    from prunekit.report.run_report import REPORT_HTML, REPORT_MD, read_run, write_report

    if resume and overwrite:
        raise ConfigError("--resume and --overwrite: pick one")
    parsed = read_recipe(str(recipe) if isinstance(recipe, os.PathLike) else recipe, overrides, defaults)
    folder = resolve_model(model, "--model")  # a missing model fails now, not in stage 1
    out = Path(out)
    recover_output_dir(out)
    inputs = [("--model", folder), ("--data", data), *recipe_inputs(parsed)]
    check_output_dir(out, overwrite=True, inputs=inputs)  # an existing run: the runner decides
    check_lengths(parsed, load_config(folder), model)
    where = run_recipe(parsed, model, data, out, resume, overwrite)
    if not is_main_process():
        return RunResult(out, [], (out / REPORT_MD, out / REPORT_HTML))
    write_report(where)
    publish_run(where, out)
    _, rows = read_run(out)
    stages = [
        {"name": row.name, "method": row.method, "role": row.role, "metric_name": row.metric_name,
         "metric": row.metric, "params": row.summary.get("params_total"),
         "speedup": row.timing.get("ratio_vs_parent"), "path": str(out / row.folder)}
        for row in rows
    ]  # fmt: skip
    return RunResult(out, stages, (out / REPORT_MD, out / REPORT_HTML))


def _train(name, model, tokenizer, data, teacher, masks, out, overwrite, options) -> StageResult:
    """A training stage on in-memory models: its config from ``options``, the data loaded for the model
    when it is a path, the Trainer in a scratch folder until the result is saved."""
    from prunekit.io import work_dir
    from prunekit.stages.inputs import evaluation_settings, resolved_data
    from prunekit.stages.train import training_data

    stage = STAGES[name]
    path = isinstance(data, (str, os.PathLike))
    config = stage.build_config({**options, **({"data": str(data)} if path else {})})
    config.runtime.for_training()  # the Trainer moves the model; the weights stay float32
    data_config = resolved_data(config.data, [model.config])
    if path:
        loaded, size = training_data(data_config, config.training, model.config, tokenizer, f"data={str(data)!r}")
    else:
        loaded, size = data, _train_size(data, tokenizer, data_config.max_length)
    context = StageContext(model, tokenizer, loaded, masks=masks, model_name=_name(model),
                           evaluation=evaluation_settings(data_config), encoding=data_config.encoding, teacher=teacher,
                           train_size=size, runtime=config.runtime)  # fmt: skip
    with work_dir(name) as scratch:
        context.scratch = scratch
        result = stage.run(context, config)
        finish(context, result, out, overwrite)
    return result


def _train_size(data, tokenizer, max_length: int) -> int:
    """Training examples of loaded data (a text corpus: blocks of ``max_length`` tokens)."""
    from prunekit.data.text import packed_blocks

    return len(packed_blocks(tokenizer, data.train, max_length)) if data.task.causal_lm else len(data.train)


def _run(name, model, tokenizer, data, calibration, masks, out, overwrite, options) -> StageResult:
    """A one-shot stage on an in-memory model: its config from ``options``, the model moved to the
    config's device and dtype, data and calibration loaded or taken as given, run, finish."""
    from prunekit.stages.inputs import evaluation_settings, resolved_data

    stage = STAGES[name]
    config = stage.build_config(options)
    model.to(device=config.runtime.torch_device(), dtype=config.runtime.torch_dtype())
    data_config = resolved_data(config.data, [model.config])
    draw = config.draw(text=type(model).__name__.endswith("ForCausalLM"))
    loaded = _load(model, data, config.data, "data", need_train=config.needs_data and calibration is None, draw=draw)
    calibration_data = None
    if isinstance(calibration, (str, os.PathLike)):
        calibration_data = _load(model, calibration, config.data, "calibration", need_train=True, need_eval=False,
                                 draw=draw)  # fmt: skip
    context = StageContext(
        model,
        tokenizer,
        loaded,
        calibration=given_batches(calibration, tokenizer, data_config.max_length),
        calibration_data=calibration_data,
        masks=masks,
        model_name=_name(model),
        evaluation=evaluation_settings(data_config),
        runtime=config.runtime,
    )
    result = stage.run(context, config)
    finish(context, result, out, overwrite)
    return result


def _load(model, data, data_config, where: str, need_train: bool, need_eval: bool = True, draw=None):
    """``data`` as the stage reads it: loaded for ``model`` (with ``data_config``'s reading options) when it
    is a path, as given otherwise."""
    if not isinstance(data, (str, os.PathLike)):
        return data
    options = data_config.task_options()
    if draw is not None:
        options.update(max_train_samples=draw.samples, seed=draw.seed)
    return load_data(model.config, str(data), where=f"{where}={str(data)!r}", need_train=need_train,
                     need_eval=need_eval, **options)  # fmt: skip


def _name(model: PreTrainedModel) -> str:
    return getattr(model.config, "_name_or_path", "") or type(model).__name__
