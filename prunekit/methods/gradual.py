"""Gradual magnitude pruning while fine-tuning (Zhu & Gupta 2017): the masks grow on the cubic schedule
(``pruning.schedules.CubicSchedule``) and pruned weights stay zero through every optimizer step.

``prunekit finetune --prune magnitude`` builds the schedule from its ``--prune-*`` / ``--initial-sparsity``
flags (the schedule's fields) and the masks' settings from ``MagnitudeConfig``'s flags."""

from __future__ import annotations

from dataclasses import replace

from transformers import TrainerCallback

from prunekit.methods.magnitude import MagnitudeConfig, compute_masks
from prunekit.pruning.masks import MaskSet
from prunekit.pruning.schedules import CubicSchedule


class SparsityCallback(TrainerCallback):
    """Holds ``masks`` through every optimizer step; with a ``schedule``, prunes more on its steps.

    No forward hook: gradients of pruned weights are zeroed before each step, AdamW's moments are
    cleared where a mask grows, and weights are re-zeroed after each step.
    """

    def __init__(
        self,
        masks: MaskSet | None = None,
        schedule: CubicSchedule | None = None,
        config: MagnitudeConfig | None = None,
    ):
        if schedule is not None and config is None:
            raise ValueError("a pruning schedule needs a MagnitudeConfig")
        self.masks = masks
        self.schedule = schedule
        self.config = config
        self.history: list[tuple[int, float]] = []  # (step, sparsity reached)

    def _prune(self, step: int, model, optimizer) -> None:
        target = self.schedule.sparsity_at(step)
        if target <= 0.0 and self.masks is None:
            return
        self.masks = compute_masks(model, replace(self.config, sparsity=target), current=self.masks)
        self.masks.apply(model)
        if optimizer is not None:
            self.masks.clear_optimizer_state(model, optimizer)
        self.history.append((step, self.masks.sparsity()))

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        if self.schedule is not None:
            self.schedule = self.schedule.for_training(state.max_steps)
        if self.masks is not None:
            self.masks.apply(model)
        if self.schedule is not None and self.schedule.is_pruning_step(state.global_step):
            self._prune(state.global_step, model, optimizer)

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if self.masks is not None:
            self.masks.mask_gradients(model)

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        if self.masks is not None:
            self.masks.apply(model)

    def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        if self.schedule is not None and self.schedule.is_pruning_step(state.global_step):
            self._prune(state.global_step, model, optimizer)
