"""The distillation loss's settings (the CLI builds its flags from them)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prunekit.errors import ConfigError
from prunekit.options import check_options, non_negative, option, positive


@dataclass
class DistillConfig:
    """The distillation loss; each field is also a ``prunekit distill`` flag (and a recipe key)."""

    temperature: float = option(2.0, "softmax temperature T", parse=positive)
    alpha_ce: float = option(0.5, "hard-label loss weight", parse=non_negative)
    alpha_kd: float = option(0.5, "soft-target loss weight", parse=non_negative)
    alpha_hidden: float = option(0.0, "hidden-state loss weight", parse=non_negative)
    alpha_attn: float = option(0.0, "attention-map loss weight", parse=non_negative)
    hidden_loss: str = option("mse", "hidden-state loss", choices=("mse", "cosine"))
    layer_map: str = option("auto", "'auto' or student:teacher layer pairs (0-based), e.g. 0:1,1:3,2:5")
    cache_teacher: bool = option(False, "compute teacher logits once per example", switch=True)
    pairs: list[tuple[int, int]] = field(default_factory=list)  # resolved by resolve_layer_map

    def __post_init__(self) -> None:
        check_options(self)
        if self.cache_teacher and (self.alpha_hidden or self.alpha_attn):
            raise ConfigError(
                "--cache-teacher caches logits only; it cannot be combined with --alpha-hidden/--alpha-attn"
            )

    @property
    def uses_layers(self) -> bool:
        return bool(self.alpha_hidden or self.alpha_attn)
