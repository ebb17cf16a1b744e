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
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from prunekit.options import config_from_options
from prunekit.pruning.masks import MaskSet
from prunekit.stages import STAGES, EvaluationSettings, StageContext, StageResult, finish
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
    max_length: int = 128,
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
    return _run("prune-magnitude", model, tokenizer, data, calibration, masks, max_length, out, overwrite, options)


def prune_structured(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase | None = None,
    *,
    data: Data | None = None,
    calibration: Calibration | None = None,
    max_length: int = 128,
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
    return _run("prune-structured", model, tokenizer, data, calibration, None, max_length, out, overwrite, options)


def evaluate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    data: Data,
    *,
    max_length: int = 128,
    stride: int | None = None,
    max_eval_tokens: int | None = None,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """``model`` scored on ``data``'s evaluation split with the task's official metric(s) (a causal LM:
    perplexity on a text corpus, in windows of ``max_length`` tokens every ``stride``); returns the
    ``prunekit evaluate`` summary (``metrics``, ``main_metric``, sizes)."""
    settings = EvaluationSettings(max_length, stride, max_eval_tokens, batch_size)
    context = StageContext(model, tokenizer, _load(model, data, "data", need_train=False), model_name=_name(model),
                           evaluation=settings)  # fmt: skip
    stage = STAGES["evaluate"]
    return finish(context, stage.run(context, stage.config()))


def _run(name, model, tokenizer, data, calibration, masks, max_length, out, overwrite, options) -> StageResult:
    """Build the stage's config from ``options``, its context from the given objects, run it, finish."""
    stage = STAGES[name]
    config = config_from_options(stage.config, options, owner=name.replace("-", "_"))
    causal = type(model).__name__.endswith("ForCausalLM")
    draw = config.draw(text=causal)
    loaded = _load(model, data, "data", need_train=config.needs_data and calibration is None, draw=draw)
    calibration_data = None
    if isinstance(calibration, (str, os.PathLike)):
        calibration_data = _load(model, calibration, "calibration", need_train=True, need_eval=False, draw=draw)
    context = StageContext(
        model,
        tokenizer,
        loaded,
        calibration=given_batches(calibration, tokenizer, max_length),
        calibration_data=calibration_data,
        masks=masks,
        model_name=_name(model),
        evaluation=EvaluationSettings(max_length=max_length),
    )
    result = stage.run(context, config)
    finish(context, result, out, overwrite)
    return result


def _load(model, data, where: str, need_train: bool, need_eval: bool = True, draw=None):
    """``data`` as the stage reads it: loaded for ``model`` when it is a path, as given otherwise."""
    if not isinstance(data, (str, os.PathLike)):
        return data
    draw_options = {"max_train_samples": draw.samples, "seed": draw.seed} if draw is not None else {}
    return load_data(model.config, str(data), where=f"{where}={str(data)!r}", need_train=need_train,
                     need_eval=need_eval, **draw_options)  # fmt: skip


def _name(model: PreTrainedModel) -> str:
    return getattr(model.config, "_name_or_path", "") or type(model).__name__
