"""Sparsity schedules: the target sparsity at each optimizer step."""

from __future__ import annotations

from dataclasses import dataclass, replace

from prunekit.errors import ConfigError
from prunekit.options import check_options, count, fraction, option, positive_int
from prunekit.pruning.select import check_sparsity


def keep_fraction_at(target: float | None, progress: float) -> float | None:
    """The keep fraction ``progress`` (0 to 1) of the way from the dense model (1) to ``target`` (None:
    no target); structured pruning's iterations and adaptive pruning's schedule both step through it."""
    return None if target is None else 1 - progress * (1 - target)


@dataclass(frozen=True)
class CubicSchedule:
    """Zhu & Gupta (2017): s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (t1 - t0))^3, pruning every ``every`` steps.

    Sparsity rises fast while the network has many redundant weights, then slowly. ``end=None`` means
    ``end_fraction`` of the run's real number of optimizer steps, fixed by ``for_training`` once the
    Trainer knows it (under torchrun that count depends on the number of processes).
    """

    final_sparsity: float  # magnitude pruning's --sparsity
    start: int = option(0, "optimizer step of the first pruning", parse=count, flag="--prune-start")
    end: int | None = option(
        None, "step reaching the target (default: 2/3 of training)", parse=count, flag="--prune-end"
    )
    every: int = option(10, "steps between pruning steps", parse=positive_int, flag="--prune-every")
    initial_sparsity: float = option(0.0, "--prune magnitude: sparsity at --prune-start", parse=fraction)
    end_fraction: float = 2 / 3

    def __post_init__(self) -> None:
        check_options(self)
        check_sparsity(self.final_sparsity)
        if self.initial_sparsity > self.final_sparsity:
            raise ConfigError(f"--initial-sparsity {self.initial_sparsity}: must not exceed --sparsity")
        if self.end is not None and self.end < self.start:
            raise ConfigError(f"--prune-start {self.start} / --prune-end {self.end}: expected start <= end")

    def for_training(self, max_steps: int) -> CubicSchedule:
        """This schedule with ``end`` resolved for a run of ``max_steps`` optimizer steps."""
        end = self.end if self.end is not None else max(self.start, int(max_steps * self.end_fraction))
        if end > max_steps:
            raise ConfigError(
                f"--prune-end {end}: training has only {max_steps} optimizer steps, so the final sparsity "
                "would never be reached"
            )
        return replace(self, end=end)

    def progress_at(self, step: int) -> float:
        """How much of the pruning is done at ``step``: 0 before ``start``, 1 from ``end``, cubic between."""
        if step < self.start:
            return 0.0
        if step >= self.end:
            return 1.0
        return 1.0 - (1.0 - (step - self.start) / (self.end - self.start)) ** 3

    def sparsity_at(self, step: int) -> float:
        if step < self.start:
            return 0.0
        return self.initial_sparsity + (self.final_sparsity - self.initial_sparsity) * self.progress_at(step)

    def is_pruning_step(self, step: int) -> bool:
        """Prune at start, every ``every`` steps after it, and at ``end`` (so the final target is met)."""
        return self.start <= step <= self.end and ((step - self.start) % self.every == 0 or step == self.end)
