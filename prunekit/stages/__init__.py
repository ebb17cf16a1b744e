"""Stages: every method as a config and a ``run(context, config)``, registered once under its recipe name
(see ``prunekit.stages.base``). Importing this package registers the built-in stages."""

from prunekit.stages import bench, evaluate, export, lottery, merge, prune, train  # noqa: F401 (registers the stages)
from prunekit.stages.base import (
    STAGES,
    EvaluationSettings,
    Stage,
    StageContext,
    StageInputs,
    StageResult,
    execute,
    finish,
    get_stage,
    register_stage,
)

__all__ = [
    "STAGES",
    "EvaluationSettings",
    "Stage",
    "StageContext",
    "StageInputs",
    "StageResult",
    "execute",
    "finish",
    "get_stage",
    "register_stage",
]
