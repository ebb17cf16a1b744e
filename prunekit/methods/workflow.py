"""LoRA and pruning in either order, or together: the recommended workflow (``prunekit compress``) and
the alternatives ``prunekit study ordering`` sets against it. Each order is a list of stages, and every
order trains the same total number of optimizer steps (three stage lengths) to the same target:

- ``joint`` (the recommended workflow): LoRA fine-tune the dense model — the *teacher* — then LoRA
  fine-tune it again while adaptive pruning removes heads and FFN neurons (allocation across layers
  from the scores) with soft targets from the teacher, then fully fine-tune the pruned model with
  soft targets from the teacher.
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

Every stage is written to ``DIR/<stage>/`` (a model folder with its summary.json) as soon as it ends;
a rerun with ``resume`` loads finished stages instead of training them again.
"""

from __future__ import annotations

import copy
import json
import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path

from transformers import PreTrainedModel, set_seed

from prunekit.adapters import get_adapter
from prunekit.data import TaskData, encode_batches
from prunekit.data.text import calibration_batches
from prunekit.errors import ConfigError
from prunekit.evaluation import make_summary, model_size
from prunekit.io import atomic_output_dir, work_dir, write_json_atomic
from prunekit.methods.adaptive import AdaptiveConfig
from prunekit.methods.gradual import SparsityCallback
from prunekit.methods.magnitude import MagnitudeConfig, prune_magnitude
from prunekit.methods.speed import LatencyTable, measure_speedups
from prunekit.methods.stage import TrainingResult, save_stage, train_stage
from prunekit.methods.structured import StructuredConfig, UnitTargets, check_budgets, prune_structured
from prunekit.models import load_model
from prunekit.options import auto_or, check_options, fraction, option, positive, positive_int, real, same_option
from prunekit.pruned_models import save_pruned
from prunekit.pruning.masks import MaskSet
from prunekit.pruning.schedules import CubicSchedule
from prunekit.training import FinetuneConfig
from prunekit.training.config import auto_passes
from prunekit.training.distill import DistillConfig
from prunekit.training.lora import LoraOptions, lora_config

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
    adaptive_score: str = same_option(
        AdaptiveConfig, "score", help="gate (|dL/dgate| per unit) or lora (LoRAPrune, from the LoRA factors)"
    )
    temperature: float = same_option(DistillConfig, "temperature")
    alpha_kd: float = option(0.5, "soft-target weight in distilled stages; the task loss gets 1 - it", parse=real(0, 1))
    calibration_samples: int = 512  # one-shot orders: examples scoring the units
    latency: LatencyTable | None = None  # measured per-width latency: latency-aware allocation

    def __post_init__(self) -> None:
        check_options(self)
        if self.order not in (*ORDERS, CONTROL):
            raise ConfigError(f"--order {self.order}: expected one of {', '.join(ORDERS)}")
        if self.latency is not None and self.target.unstructured:
            raise ConfigError("--latency-aware allocates heads and neurons: not for an unstructured --sparsity")

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


class Workflow:
    """Runs one order's stages on ``model_name`` for ``data``, writing each stage into ``out/<stage>``."""

    def __init__(
        self,
        config: WorkflowConfig,
        model_name: str,
        data: TaskData,
        out: Path,
        evaluate: Callable[[PreTrainedModel], dict],
        resume: bool = False,
    ):
        if config.stage_steps == "auto":
            raise ConfigError("WorkflowConfig.stage_steps is 'auto': resolve it for the data first (.resolved)")
        self.config = config
        self.model_name = model_name
        self.data = data
        self.out = Path(out)
        self.evaluate = evaluate
        self.resume = resume
        self.rows: list[StageRow] = []

    # ------------------------------------------------------------------ running

    def run(self) -> list[StageRow]:
        """All stages; one row per stage (in the main process: the other ``torchrun`` processes train
        the same stages and get no rows). The final model is in ``out/<last stage>``."""
        config = self.config
        set_seed(config.seed)  # the classifier head is initialised reproducibly
        model, tokenizer = load_model(self.model_name, self.data.task)
        teacher, total = None, 0
        masks = None  # an unstructured target's masks, held from the stage that makes them on
        stages = stages_of(config.order, config.stage_steps, config.prune_with, config.target.unstructured)
        for index, spec in enumerate(stages):
            folder = self.out / spec.name
            total += spec.steps
            set_seed(config.seed + index)  # each stage's LoRA init and data order, resumed or not
            if self.resume and (folder / "summary.json").is_file():
                model, tokenizer = load_model(str(folder))
                model.train()
                masks = MaskSet.load(folder, model)
                row = json.loads((folder / "summary.json").read_text())["row"]
                self.rows.append(StageRow(**row))
            elif spec.kind == "prune":
                masks = self._prune(model, tokenizer, spec, folder, total)
            else:
                model, masks = self._train(model, tokenizer, spec, folder, total, teacher, masks)
            if spec.becomes_teacher:
                teacher = copy.deepcopy(model).eval()
        return self.rows

    def _finetune_config(self, spec: StageSpec) -> FinetuneConfig:
        config = self.config
        return FinetuneConfig(
            batch_size=config.batch_size,
            lr=config.lora_lr if spec.kind == "lora" else config.lr,
            max_length=config.max_length,
            seed=config.seed,
            weight_decay=config.weight_decay,
            warmup_ratio=config.warmup_ratio,
            max_steps=spec.steps,
        )

    def _target_settings(self) -> dict:
        """What to keep and how to allocate it: shared by adaptive and one-shot structured pruning."""
        config, target = self.config, self.config.target
        return dict(
            heads=target.heads,
            ffn=target.ffn,
            params_budget=target.params_budget,
            flops_budget=target.flops_budget,
            flops_seq_len=config.max_length,
            scope=config.scope,
            min_heads=config.min_heads,
            min_ffn=config.min_ffn,
            round_to=config.round_to,
            latency=config.latency,
        )

    def _train(self, model, tokenizer, spec: StageSpec, folder: Path, total: int, teacher, masks) -> tuple:
        """Train one stage; the plain model it ends with and the masks it holds."""
        config = self.config
        lora = None
        if spec.kind == "lora":
            lora = lora_config(model, config.lora_r, config.lora_alpha, config.lora_dropout, config.lora_targets)
        adaptive, sparsity = None, None
        if spec.adaptive and config.target.unstructured:
            magnitude = MagnitudeConfig(sparsity=config.target.sparsity)
            sparsity = SparsityCallback(masks, CubicSchedule(magnitude.sparsity, 0), magnitude)
        elif spec.adaptive:
            adaptive = AdaptiveConfig(**self._target_settings(), beta=config.score_ema, score=config.adaptive_score)
        kd = None
        if spec.distill:
            if teacher is None:
                raise ConfigError(f"stage {spec.name}: distillation needs the teacher stage first")
            kd = DistillConfig(temperature=config.temperature, alpha_ce=1 - config.alpha_kd, alpha_kd=config.alpha_kd)
        with work_dir(f"workflow-{spec.name}") as scratch:
            result = train_stage(
                model,
                tokenizer,
                self.data,
                self._finetune_config(spec),
                scratch,
                lora=lora,
                masks=masks,
                sparsity=sparsity,
                adaptive=adaptive,
                teacher=teacher if spec.distill else None,
                kd=kd,
                evaluate=self.evaluate,
            )
            if result.is_main:
                save = partial(save_stage, result, tokenizer)
                self._write(result.model, spec, folder, total, save, result)
        return result.model, result.masks

    def _prune(self, model, tokenizer, spec: StageSpec, folder: Path, total: int) -> MaskSet | None:
        """One-shot pruning in place; the masks of an unstructured target (None for a structured one)."""
        config = self.config
        masks = None
        if config.target.unstructured:
            masks = prune_magnitude(model, MagnitudeConfig(sparsity=config.target.sparsity))
        else:
            self._prune_units(model, tokenizer, spec)
        if _is_main():

            def save(tmp: Path) -> None:
                save_pruned(model, tmp)
                tokenizer.save_pretrained(tmp)
                if masks is not None:
                    masks.save(tmp)

            self._write(model, spec, folder, total, save, None)
        return masks

    def _prune_units(self, model, tokenizer, spec: StageSpec) -> None:
        config = self.config
        structured = StructuredConfig(importance=spec.importance, **self._target_settings())
        batches = []
        if spec.importance == "taylor" and self.data.task.causal_lm:  # windows of the training text
            samples = config.calibration_samples
            batches = calibration_batches(tokenizer, self.data.train, samples, config.max_length, config.seed,
                                          config.batch_size)  # fmt: skip
        elif spec.importance == "taylor":
            train = self.data.train
            draw = random.Random(config.seed).sample(range(len(train)), min(config.calibration_samples, len(train)))
            batches = encode_batches(
                train.subset(draw), tokenizer, config.max_length, self.data.task.is_regression, config.batch_size
            )
        prune_structured(model, structured, batches)

    def _write(self, model, spec, folder, total, save, result: TrainingResult | None) -> None:
        """Evaluate the stage's model and write its folder (model, tokenizer, summary with the row)."""
        metrics = self.evaluate(model)
        with atomic_output_dir(folder, overwrite=True) as tmp:
            save(tmp)  # model and tokenizer
            size = model_size(model, tmp)
            extra = {"structure": get_adapter(model).describe()}
            if result is not None:
                extra["train"] = result.train_record()
                if result.lora:
                    extra["lora"] = result.lora
                if result.pruned:
                    extra["adaptive"] = result.pruned["adaptive"]
                if spec.adaptive and result.masks is not None:
                    extra["sparsity"] = result.masks.sparsity()
            row = StageRow(spec.name, spec.kind, spec.steps, total, metrics, folder=spec.name, extra=extra, **size)
            summary = make_summary(
                "workflow-stage",
                self.model_name,
                self.data.task.name,
                metrics=metrics,
                main_metric=self.data.task.main_metric,
                **size,
                order=self.config.order,
                row=asdict(row),
            )
            write_json_atomic(Path(tmp) / "summary.json", summary)
        self.rows.append(row)


def _is_main() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def dense_control(
    model_name: str,
    data: TaskData,
    config: WorkflowConfig,
    out: Path,
    evaluate: Callable[[PreTrainedModel], dict],
    resume: bool = False,
) -> StageRow | None:
    """The equal-budget dense control: the dense model fully fine-tuned for the workflow's total
    steps, at the full fine-tuning lr — the bar a compressed model is measured against. Written to
    ``out/control``; None in the other ``torchrun`` processes."""
    rows = Workflow(replace(config, order=CONTROL), model_name, data, out, evaluate, resume).run()
    return rows[-1] if rows else None


def time_stages(
    dense: PreTrainedModel,
    rows: list[StageRow],
    out: Path,
    shapes: tuple[tuple[int, int], ...],
    threads: int | None = None,
) -> None:
    """Time every stage's saved model against ``dense`` (interleaved, per shape); the latency ratios go
    into each row's ``extra["speedup"]`` as ``{"32x128": ratio}`` (> 1: faster than dense)."""
    models = [load_model(str(Path(out) / row.folder))[0] for row in rows]
    ratios = measure_speedups(dense, models, shapes, threads)
    for index, row in enumerate(rows):
        row.extra["speedup"] = {f"{b}x{s}": per_shape[index] for (b, s), per_shape in zip(shapes, ratios)}
