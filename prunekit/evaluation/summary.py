"""The one JSON schema shared by ``summary.json`` and every ``--json`` file (see docs/results-schema.md)."""

from __future__ import annotations

import os
from typing import Any

import torch

from prunekit.models import count_parameters, weights_size_bytes
from prunekit.version import __version__

SCHEMA_VERSION = 1


def model_size(model: torch.nn.Module, folder: str | os.PathLike | None) -> dict[str, int | None]:
    """``params_total``, ``params_nonzero`` and ``size_bytes`` (weights on disk; None if unsaved)."""
    total, nonzero = count_parameters(model, folder)
    size = weights_size_bytes(folder) if folder is not None and os.path.isdir(folder) else None
    return {"params_total": total, "params_nonzero": nonzero, "size_bytes": size}


def make_summary(
    kind: str, model: str, task: str | None, model_path: str | None = None, **fields: Any
) -> dict[str, Any]:
    """A result record: the common header, then ``fields`` in the order given. ``model_path`` is the
    folder ``model`` resolved to (an alias such as ``smollm2`` names a converted local folder)."""
    header = {"schema_version": SCHEMA_VERSION, "prunekit_version": __version__, "kind": kind, "model": model}
    if model_path is not None:
        header["model_path"] = model_path
    return {**header, "task": task, **fields}


def evaluation_fields(settings: Any, model, tokenizer, data, batch_size: int | None = None) -> dict:
    """summary.json's evaluation fields: ``metrics``, ``main_metric`` and ``eval_samples`` (labelled
    data) or ``eval_tokens`` (a text corpus: perplexity windows); nothing without evaluation data.
    ``settings`` has ``max_length``, ``stride`` and ``max_eval_tokens`` (the parsed flags, or
    ``stages.EvaluationSettings``)."""
    from prunekit.evaluation.evaluate import evaluate_model
    from prunekit.evaluation.perplexity import perplexity_fields

    if data is None or data.eval is None:
        return {}
    if data.task.causal_lm:
        return perplexity_fields(model, tokenizer, data.eval, max_length=settings.max_length, stride=settings.stride,
                                 max_tokens=settings.max_eval_tokens, batch_size=batch_size or 4)  # fmt: skip
    metrics = evaluate_model(model, tokenizer, data.eval, data.task, max_length=settings.max_length,
                             batch_size=batch_size or 64)  # fmt: skip
    return dict(metrics=metrics, main_metric=data.task.main_metric, eval_samples=len(data.eval))
