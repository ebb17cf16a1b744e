"""LoRA and pruning in either order, or together, as recipes: the recommended workflow (``prunekit
compress``, the ``joint`` order — what the built-in ``default`` recipe runs) and the alternatives
``prunekit study ordering`` sets against it. Every order trains the same total number of optimizer steps
(three stage lengths) to the same target:

- ``joint``: LoRA fine-tune the dense model — the *teacher* — then LoRA fine-tune it again while adaptive
  pruning removes heads and FFN neurons (allocation across layers from the scores) with soft targets from
  the teacher, then fully fine-tune the pruned model with soft targets from the teacher.
- ``lora-prune``: LoRA fine-tune (the teacher), merge, prune one-shot with task-aware (Taylor) scores,
  then fully fine-tune with soft targets from the teacher for two stage lengths.
- ``prune-lora``: prune the pretrained model one-shot with task-agnostic scores (weight magnitude: no
  task labels exist yet), LoRA fine-tune it for two stage lengths, merge, fully fine-tune one more.
  This path never has a task-trained dense model, so no soft targets.

An unstructured target (``Target.sparsity``: a fraction of the layers' weights set to zero, ranked by
magnitude over all layers) runs the same orders with magnitude pruning in place of unit pruning: the
joint order prunes gradually (cubic schedule) while it trains — every weight, since a frozen base's
magnitudes would not move — and each later stage holds the masks (LoRA adds only ``M ⊙ ΔW``, so the
merge keeps every zero).

``order_recipe`` writes an order as a recipe (stage folders named ``teacher``, ``pruned``, ``final`` ...)
that ``recipes.runner.run_stages`` runs like any other; ``stage_rows`` reads its table back.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from prunekit.errors import ConfigError
from prunekit.io import read_json
from prunekit.methods.adaptive import AdaptiveConfig
from prunekit.methods.magnitude import MagnitudeConfig
from prunekit.methods.structured import StructuredConfig, UnitTargets, check_budgets
from prunekit.options import auto_or, check_options, fraction, option, positive, positive_int, same_option, unused
from prunekit.recipes.recipe import Recipe, parse_recipe
from prunekit.training.config import FinetuneConfig, auto_passes
from prunekit.training.distill_config import DistillConfig
from prunekit.training.lora import LoraOptions

ORDERS = ("joint", "lora-prune", "prune-lora")
CONTROL = "control"  # not an order: the dense model fully fine-tuned for the same three stage lengths


@dataclass
class Target:
    """What the compressed model keeps: fractions of heads / FFN neurons, a parameter budget or a FLOPs
    budget (fraction of the dense layers' FLOPs) — or, unstructured, a weight ``sparsity``."""

    heads: float | None = same_option(UnitTargets, "heads")
    ffn: float | None = same_option(UnitTargets, "ffn")
    params_budget: int | None = same_option(UnitTargets, "params_budget")
    flops_budget: float | None = same_option(UnitTargets, "flops_budget")
    sparsity: float | None = same_option(
        MagnitudeConfig,
        "sparsity",
        default=None,
        help="unstructured instead: fraction of the layers' weights to zero by magnitude, e.g. 0.7 (smaller on "
        "disk, not faster on CPU)",
    )

    def __post_init__(self) -> None:
        check_options(self)
        structured = (self.heads, self.ffn, self.params_budget, self.flops_budget)
        if self.sparsity is not None:
            if any(v is not None for v in structured):
                raise ConfigError("--sparsity (unstructured) and --heads/--ffn/budgets (structured): pass one kind")
            return
        if all(v is None for v in structured):
            raise ConfigError(
                "nothing to prune: pass --speedup, --heads, --ffn, --params-budget, --flops-budget or --sparsity"
            )
        check_budgets(self.heads, self.ffn, self.params_budget, self.flops_budget)

    @property
    def unstructured(self) -> bool:
        return self.sparsity is not None


@dataclass
class WorkflowConfig:
    """One run of an order (``prunekit compress``, ``study ordering``); each ``option`` field is a flag of
    both, most declared by the method config they feed (``same_option``)."""

    target: Target
    order: str = "joint"
    stage_steps: int | str = option(
        "auto",
        "optimizer steps per stage (three stages); auto (default): the passes `--epochs auto` picks for the data",
        parse=auto_or(positive_int),
    )
    batch_size: int = same_option(FinetuneConfig, "batch_size")
    max_length: int = 128
    seed: int = 42
    lora_lr: float = option(5e-4, "LoRA stages' learning rate", parse=positive)
    teacher_lr: float | None = option(None, "the LoRA teacher stage's learning rate (default: --lora-lr)",
                                      parse=positive)  # fmt: skip
    lr: float = same_option(FinetuneConfig, "lr", default=1e-4, help="full fine-tuning stages' learning rate")
    warmup_ratio: float = option(0.1, "fraction of each stage's steps warming the lr up", parse=fraction)
    weight_decay: float = same_option(FinetuneConfig, "weight_decay")
    lora_r: int = same_option(LoraOptions, "lora_r")
    lora_alpha: float | None = same_option(LoraOptions, "lora_alpha")
    lora_dropout: float = same_option(LoraOptions, "lora_dropout")
    lora_targets: str = same_option(LoraOptions, "lora_targets")
    prune_with: str = option(
        "lora",
        "the adaptive-pruning stage trains LoRA adapters on the frozen teacher or every weight (full; always with "
        "--sparsity: gradual magnitude pruning needs moving weights)",
        choices=("lora", "full"),
    )
    scope: str = same_option(UnitTargets, "scope")
    round_to: int = same_option(AdaptiveConfig, "round_to")
    min_heads: int = same_option(UnitTargets, "min_heads")
    min_ffn: int = same_option(UnitTargets, "min_ffn")
    score_ema: float = same_option(AdaptiveConfig, "beta")
    adaptive_score: str = same_option(AdaptiveConfig, "score")
    latency_aware: bool = same_option(UnitTargets, "latency_aware")
    temperature: float = same_option(DistillConfig, "temperature")
    alpha_kd: float = same_option(DistillConfig, "alpha_kd")
    alpha_ce: float = same_option(DistillConfig, "alpha_ce")
    alpha_hidden: float = same_option(DistillConfig, "alpha_hidden")
    hidden_loss: str = same_option(DistillConfig, "hidden_loss")
    reconstruct: bool = same_option(StructuredConfig, "reconstruct")  # the one-shot step of lora-prune / prune-lora
    calibration_samples: int = 512  # one-shot orders: examples scoring the units
    latency_table: str | None = None  # with latency_aware: the table the command measured (JSON), reused by stages
    max_train_samples: int | None = None  # the training subset, drawn once with data_seed
    data_seed: int | None = None  # None: seed (a study fixes it so that seeds vary training only)

    def __post_init__(self) -> None:
        check_options(self)
        if self.order not in (*ORDERS, CONTROL):
            raise ConfigError(f"--order {self.order}: expected one of {', '.join(ORDERS)}")
        if self.latency_aware and self.target.unstructured:
            raise ConfigError("--latency-aware allocates heads and neurons: not for an unstructured --sparsity")

    def ineffective(self) -> dict[str, str]:
        ignored = {} if self.alpha_hidden else unused(["hidden_loss"], "without --alpha-hidden")
        if not self.target.unstructured:
            if self.order == "joint":  # compress, and study's joint order
                ignored["reconstruct"] = ("in the joint order (it prunes while training: no one-shot step); "
                                          "study ordering --orders lora-prune prune-lora has one")  # fmt: skip
            return ignored
        allocation = (
            "scope",
            "round_to",
            "min_heads",
            "min_ffn",
            "score_ema",
            "adaptive_score",
            "prune_with",
            "reconstruct",
        )
        return ignored | unused(allocation, "with --sparsity (it prunes weights by magnitude, not heads and neurons)")

    def stages(self) -> list[StageSpec]:
        """The stages of this config's order (its control: ``order="control"``)."""
        return stages_of(self.order, self.stage_steps, self.prune_with, self.target.unstructured)

    def resolved(self, train_size: int) -> WorkflowConfig:
        """This config with ``stage_steps`` ``auto`` made the steps of the passes ``--epochs auto`` picks for
        ``train_size`` training examples (a text corpus: blocks)."""
        if self.stage_steps != "auto":
            return self
        passes = auto_passes(train_size, self.batch_size)
        return replace(self, stage_steps=passes * math.ceil(train_size / self.batch_size))


@dataclass
class StageSpec:
    """One stage of an order: ``train`` (``lora`` or ``full``) for ``steps``, optionally pruning while it
    trains (``adaptive``: units, or gradual magnitude for an unstructured target) and distilling from
    the teacher; or a one-shot ``prune`` (0 steps)."""

    name: str
    kind: str  # lora | full | prune
    steps: int = 0
    adaptive: bool = False
    distill: bool = False
    importance: str = "taylor"  # prune stages
    becomes_teacher: bool = False


def stages_of(order: str, steps: int, prune_with: str = "lora", unstructured: bool = False) -> list[StageSpec]:
    """The stages of ``order`` (see the module docstring), each training ``steps`` or a multiple;
    ``prune_with="full"`` trains every weight while ``joint`` prunes adaptively (instead of LoRA), as
    an ``unstructured`` target always does."""
    if unstructured:
        prune_with = "full"
    if order == "joint":
        return [
            StageSpec("teacher", "lora", steps, becomes_teacher=True),
            StageSpec("pruned", prune_with, steps, adaptive=True, distill=True),
            StageSpec("final", "full", steps, distill=True),
        ]
    if order == "lora-prune":
        return [
            StageSpec("teacher", "lora", steps, becomes_teacher=True),
            StageSpec("pruned", "prune", importance="taylor"),
            StageSpec("final", "full", 2 * steps, distill=True),
        ]
    if order == CONTROL:
        return [StageSpec("control", "full", 3 * steps)]
    return [
        StageSpec("pruned", "prune", importance="magnitude"),
        StageSpec("lora", "lora", 2 * steps),
        StageSpec("final", "full", steps),
    ]


def order_recipe(config: WorkflowConfig, data_options: dict[str, Any], control: bool = False) -> Recipe:
    """``config.order`` as a recipe (``data_options``: the data flags every stage reads with); with
    ``control``, the equal-budget dense control as its last stage (folder ``control``)."""
    if config.stage_steps == "auto":
        raise ConfigError("WorkflowConfig.stage_steps is 'auto': resolve it for the data first (.resolved)")
    stages = [{"name": spec.name, **_stage_options(config, spec)} for spec in config.stages()]
    if control:
        stages.append({"name": CONTROL, "method": "finetune", "role": "control", **_training(config, "full", None)})
    raw = {"description": f"the {config.order} order", "defaults": _defaults(data_options), "stages": stages}
    return replace(parse_recipe(raw, f"{config.order} order"), numbered=False)


def control_recipe(config: WorkflowConfig, data_options: dict[str, Any]) -> Recipe:
    """The equal-budget dense control alone: the dense model fully fine-tuned for three stage lengths."""
    stage = {"name": CONTROL, "method": "finetune", **_training(config, "full", 3 * config.stage_steps)}
    raw = {"description": "the equal-budget dense control", "defaults": _defaults(data_options), "stages": [stage]}
    return replace(parse_recipe(raw, "control"), numbered=False)


def _defaults(data_options: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in data_options.items() if value not in (None, False)}


def _training(config: WorkflowConfig, kind: str, steps: int | None) -> dict[str, Any]:
    """A training stage's hyper-parameters (``steps`` None: the control's budget, which the runner sets)."""
    options = {
        "lr": config.lora_lr if kind == "lora" else config.lr,
        "batch_size": config.batch_size,
        "max_length": config.max_length,
        "seed": config.seed,
        "weight_decay": config.weight_decay,
        "warmup_ratio": config.warmup_ratio,
        "max_train_samples": config.max_train_samples,
        "data_seed": config.data_seed,
    }
    if steps is not None:
        options["max_steps"] = steps
    if kind == "lora":
        options.update(lora_r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                       lora_targets=config.lora_targets)  # fmt: skip
    return {key: value for key, value in options.items() if value is not None}


def _kept(config: WorkflowConfig) -> dict[str, Any]:
    """What to keep and how to allocate it: shared by adaptive and one-shot structured pruning."""
    target = config.target
    options = dict(heads=target.heads, ffn=target.ffn, params_budget=target.params_budget,
                   flops_budget=target.flops_budget, round_to=config.round_to, min_heads=config.min_heads,
                   min_ffn=config.min_ffn, latency_aware=config.latency_aware,
                   latency_table=config.latency_table if config.latency_aware else None)  # fmt: skip
    return {key: value for key, value in options.items() if value is not None}


def _stage_options(config: WorkflowConfig, spec: StageSpec) -> dict[str, Any]:
    target = config.target
    if spec.kind == "prune" and target.unstructured:
        return {"method": "prune-magnitude", "sparsity": target.sparsity, "max_length": config.max_length}
    if spec.kind == "prune":
        return {"method": "prune-structured", "importance": spec.importance, "scope": config.scope, **_kept(config),
                **({"reconstruct": True} if config.reconstruct else {}),
                "calibration_samples": config.calibration_samples, "calibration_seed": config.seed,
                "calibration_length": config.max_length, "calibration_batch_size": config.batch_size,
                "max_length": config.max_length}  # fmt: skip
    options = _training(config, spec.kind, spec.steps)
    if spec.becomes_teacher and config.teacher_lr is not None:
        options["lr"] = config.teacher_lr
    if spec.distill:
        options.update(distill_from="@teacher", alpha_kd=config.alpha_kd, alpha_ce=config.alpha_ce,
                       temperature=config.temperature)  # fmt: skip
        if config.alpha_hidden:
            options.update(alpha_hidden=config.alpha_hidden, hidden_loss=config.hidden_loss)
    if spec.adaptive and target.unstructured:  # gradual magnitude pruning, from the first step
        return {"method": "finetune", **options, "prune": "magnitude", "sparsity": target.sparsity, "prune_start": 0}
    if spec.adaptive:
        allocation = dict(scope=config.scope, score_ema=config.score_ema, adaptive_score=config.adaptive_score)
        return {"method": "adaptive", **options, "lora": spec.kind == "lora", **_kept(config), **allocation}
    return {"method": "lora" if spec.kind == "lora" else "finetune", **options}


@dataclass
class StageRow:
    """One line of the workflow's table (and of ``summary.json``'s ``stages``)."""

    stage: str
    kind: str
    steps: int
    total_steps: int
    metrics: dict
    params_total: int
    params_nonzero: int
    size_bytes: int | None
    folder: str  # the stage's model folder, relative to the workflow's output
    extra: dict = field(default_factory=dict)


def stage_rows(run: Path, specs: list[StageSpec], prefix: str = "") -> list[StageRow]:
    """The table of an order's finished run in ``run``: one row per stage, from its summary (``prefix``:
    where ``run`` lies in the command's output, for the rows' folders). Each stage's summary.json also
    gets its row (``row``)."""
    from prunekit.adapters import get_adapter
    from prunekit.io import write_json_atomic
    from prunekit.models import load_model

    rows, total = [], 0
    for spec in specs:
        folder = Path(run) / spec.name
        summary = read_json(folder / "summary.json", f"stage {spec.name}'s result")
        total += spec.steps
        extra: dict[str, Any] = {"structure": get_adapter(load_model(str(folder))[0]).describe()}
        for key in ("train", "lora", "adaptive"):
            if summary.get(key) is not None:
                extra[key] = summary[key]
        if spec.adaptive and summary.get("sparsity") is not None:
            extra["sparsity"] = summary["sparsity"]
        row = StageRow(spec.name, spec.kind, spec.steps, total, summary.get("metrics", {}), summary["params_total"],
                       summary["params_nonzero"], summary.get("size_bytes"), f"{prefix}{spec.name}", extra)  # fmt: skip
        write_json_atomic(folder / "summary.json", {**summary, "row": asdict(row)})
        rows.append(row)
    return rows
