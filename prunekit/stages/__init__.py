"""Stages: every method as a config and a ``run(context, config)``, registered once under its recipe name
(see ``prunekit.stages.base``). Importing this package registers the built-in stages."""

from prunekit.stages import evaluate, prune  # noqa: F401 (registers the stages)
from prunekit.stages.base import (
    STAGES,
    EvaluationSettings,
    Stage,
    StageContext,
    StageResult,
    finish,
    get_stage,
    register_stage,
)

__all__ = [
    "STAGES",
    "EvaluationSettings",
    "Stage",
    "StageContext",
    "StageResult",
    "finish",
    "get_stage",
    "register_stage",
]
