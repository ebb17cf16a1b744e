"""Training hyper-parameters (the CLI builds its training flags from them)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace

from prunekit.errors import ConfigError
from prunekit.options import auto_or, check_options, fraction, non_negative, option, positive, positive_int, seed_option
from prunekit.options import seed as seed_number

# `--epochs auto` (bench/defaults.py measured why): small datasets get enough passes for this many
# optimizer steps (at most AUTO_MAX_PASSES) and a 10 % warm-up; large ones one pass, no warm-up.
AUTO_MIN_STEPS = 600
AUTO_MAX_PASSES = 10
AUTO_WARMUP = 0.1


def auto_passes(train_size: int, batch_size: int, world_size: int | None = None) -> int:
    """Passes over ``train_size`` examples giving at least ``AUTO_MIN_STEPS`` optimizer steps."""
    if world_size is None:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))  # torchrun: each step sees every process's batch
    steps_per_pass = max(1, math.ceil(train_size / (batch_size * world_size)))
    return min(AUTO_MAX_PASSES, math.ceil(AUTO_MIN_STEPS / steps_per_pass))


@dataclass
class FinetuneConfig:
    """Training hyper-parameters; each ``option`` field is also a training flag (and a recipe key). The
    defaults fine-tune MiniLM on SST-2 to ~0.84 in one pass."""

    epochs: float | str = option(
        "auto",
        "passes over the training data; auto (default): enough passes for 600 optimizer steps (at most 10), "
        "one for a large dataset",
        parse=auto_or(positive),
    )
    batch_size: int = option(32, "per process", parse=positive_int)
    lr: float = option(5e-5, "peak learning rate", parse=positive)
    weight_decay: float = option(0.01, "AdamW weight decay", parse=non_negative)
    warmup_ratio: float | str = option(
        "auto",
        "fraction of steps warming the lr up; auto (default): 0.1 when --epochs auto chose several passes, else 0",
        parse=auto_or(fraction),
    )
    seed: int = seed_option()
    max_steps: int | None = option(None, "stop after N optimizer steps (overrides --epochs' count)", parse=positive_int)
    checkpoint_every: int | None = option(
        None,
        "save a resumable checkpoint (weights, optimizer, data order, RNG) every N optimizer steps into "
        "--checkpoint-dir; rerunning the command continues from the latest one",
        parse=positive_int,
    )
    max_train_samples: int | None = option(
        None, "train on a seeded random subset of N examples (text corpus: blocks)", parse=positive_int
    )
    data_seed: int | None = option(
        None, "seed of the --max-train-samples draw (default: --seed; fix it to vary training only)", parse=seed_number
    )
    gradient_checkpointing: bool = option(
        False,
        "keep only each layer's input from the forward pass and recompute the rest in the backward pass "
        "(activation checkpointing): much less memory for activations, about a third more compute",
        switch=True,
    )
    max_length: int = 128  # tokens; longer inputs are truncated (the data flag --max-length)
    logging_steps: float = 0.02  # a fraction of the steps: ~50 points of the loss curve
    device: str = "auto"  # --device: cpu trains on the CPU even where a GPU is
    precision: str = "float32"  # --dtype: bfloat16 / float16 train in mixed precision over float32 weights

    def __post_init__(self) -> None:
        check_options(self)
        if self.max_length < 8:
            raise ConfigError(f"--max-length {self.max_length}: expected at least 8 tokens")

    @property
    def draw_seed(self) -> int:
        """The seed of the training subset's draw."""
        return self.seed if self.data_seed is None else self.data_seed

    def resolved(self, train_size: int, world_size: int | None = None) -> FinetuneConfig:
        """This config with ``auto`` epochs / warm-up made numbers for ``train_size`` training examples."""
        epochs = auto_passes(train_size, self.batch_size, world_size) if self.epochs == "auto" else self.epochs
        warmup = self.warmup_ratio
        if warmup == "auto":
            warmup = AUTO_WARMUP if self.epochs == "auto" and epochs > 1 else 0.0
        return replace(self, epochs=epochs, warmup_ratio=warmup)
