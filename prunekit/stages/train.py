"""Training stages: ``finetune`` (every weight, or LoRA; pruning gradually by magnitude or adaptively
by heads and neurons on the way; soft targets from a teacher) and ``distill`` (a student trained on a
teacher's soft targets, hidden states and attention maps). Both run ``methods.stage.train_stage``.

``load_finetune`` / ``load_distill`` build the context from model folders and the data flags, the same
way for the command line and for recipes; the Python API passes models it holds instead.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from prunekit.devices import DeviceConfig
from prunekit.errors import ConfigError
from prunekit.methods.adaptive import AdaptiveConfig
from prunekit.methods.gradual import SparsityCallback
from prunekit.methods.magnitude import MagnitudeConfig
from prunekit.methods.structured import UnitTargets
from prunekit.options import option, positive_int, same_option, section, unused
from prunekit.pruning.schedules import CubicSchedule
from prunekit.stages.base import Stage, StageContext, StageInputs, StageResult, add_stage, register_stage
from prunekit.stages.inputs import DataConfig, evaluation_settings, resolved_data
from prunekit.training.config import FinetuneConfig
from prunekit.training.distill_config import DistillConfig
from prunekit.training.lora import LoraOptions

PRUNE_MODES = ("magnitude", "adaptive")


@dataclass
class FinetunePruning:
    """Pruning while fine-tuning: gradual magnitude pruning (a cubic schedule to ``sparsity``) or
    adaptive pruning of heads and FFN neurons (scored as training goes, then removed). Each option is
    the one its method declares (``same_option``); the two share the schedule's timing and ``scope``."""

    prune: str | None = option(
        None,
        "magnitude: unstructured, gradual; adaptive: heads and FFN neurons scored during training and removed, "
        "allocation across layers from the scores",
        choices=PRUNE_MODES,
    )
    start: int = same_option(CubicSchedule, "start")
    end: int | None = same_option(CubicSchedule, "end")
    every: int = same_option(CubicSchedule, "every")
    initial_sparsity: float = same_option(CubicSchedule, "initial_sparsity")
    sparsity: float = same_option(MagnitudeConfig, "sparsity")
    scope: str | None = same_option(MagnitudeConfig, "scope")
    pattern: str | None = same_option(MagnitudeConfig, "pattern")
    targets: str | None = same_option(MagnitudeConfig, "targets")
    exclude: str | None = same_option(MagnitudeConfig, "exclude")
    heads: float | None = same_option(UnitTargets, "heads")
    ffn: float | None = same_option(UnitTargets, "ffn")
    params_budget: int | None = same_option(UnitTargets, "params_budget")
    flops_budget: float | None = same_option(UnitTargets, "flops_budget")
    min_heads: int = same_option(UnitTargets, "min_heads")
    min_ffn: int = same_option(UnitTargets, "min_ffn")
    latency_aware: bool = same_option(UnitTargets, "latency_aware")
    latency_table: str | None = same_option(UnitTargets, "latency_table")
    round_to: int = same_option(AdaptiveConfig, "round_to")
    score_ema: float = same_option(AdaptiveConfig, "beta")
    adaptive_score: str = same_option(AdaptiveConfig, "score")

    def ineffective(self) -> dict[str, str]:
        magnitude_only = ("sparsity", "initial_sparsity", "pattern", "targets", "exclude")
        adaptive_only = ("heads", "ffn", "params_budget", "flops_budget", "min_heads", "min_ffn", "latency_aware",
                         "latency_table", "round_to", "score_ema", "adaptive_score")  # fmt: skip
        ignored = {} if self.latency_aware else unused(["latency_table"], "without --latency-aware")
        if self.prune != "magnitude":
            ignored.update(unused(magnitude_only, "without --prune magnitude"))
        if self.prune != "adaptive":
            ignored.update(unused(adaptive_only, "without --prune adaptive"))
        if self.prune is None:
            ignored.update(unused(("prune_start", "prune_end", "prune_every", "scope"), "without --prune"))
        return ignored

    def magnitude(self) -> MagnitudeConfig:
        return MagnitudeConfig(sparsity=self.sparsity, scope=self.scope, pattern=self.pattern, targets=self.targets,
                               exclude=self.exclude)  # fmt: skip

    def schedule(self) -> CubicSchedule:
        return CubicSchedule(self.sparsity, start=self.start, end=self.end, every=self.every,
                             initial_sparsity=self.initial_sparsity)  # fmt: skip

    def adaptive(self, max_length: int) -> AdaptiveConfig:
        return AdaptiveConfig(
            heads=self.heads, ffn=self.ffn, params_budget=self.params_budget, flops_budget=self.flops_budget,
            scope=self.scope, min_heads=self.min_heads, min_ffn=self.min_ffn,
            latency_aware=self.latency_aware, flops_seq_len=max_length, round_to=self.round_to, beta=self.score_ema,
            score=self.adaptive_score, start=self.start, end=self.end, every=self.every,
        )  # fmt: skip


@dataclass
class FinetuneStageConfig:
    """``finetune``: the training hyper-parameters, LoRA, pruning while training, distillation from a
    teacher (``distill_from``: soft targets, and with ``alpha_hidden`` / ``alpha_attn`` layer by layer,
    each student layer learning from its mapped teacher layer), and the data."""

    training: FinetuneConfig = section(FinetuneConfig)
    lora: LoraOptions = section(LoraOptions)
    pruning: FinetunePruning = section(FinetunePruning)
    distill_from: str | None = option(
        None, "fine-tuned teacher: add its soft targets (and with --alpha-hidden its hidden states) to the loss"
    )
    temperature: float = same_option(DistillConfig, "temperature")
    alpha_kd: float = same_option(DistillConfig, "alpha_kd")
    alpha_ce: float = same_option(DistillConfig, "alpha_ce")
    alpha_hidden: float = same_option(DistillConfig, "alpha_hidden")
    hidden_loss: str = same_option(DistillConfig, "hidden_loss")
    alpha_attn: float = same_option(DistillConfig, "alpha_attn")
    layer_map: str = same_option(DistillConfig, "layer_map")
    data: DataConfig = section(DataConfig)
    runtime: DeviceConfig = section(DeviceConfig)

    def __post_init__(self) -> None:
        if self.lora.lora and self.pruning.prune == "magnitude":
            raise ConfigError(
                "--prune magnitude with --lora: prune first (prunekit prune), then fine-tune the result with --lora"
            )
        if self.training.checkpoint_every and self.pruning.prune:
            raise ConfigError(
                f"--checkpoint-every with --prune {self.pruning.prune}: the pruning schedule's state is not in a "
                "Trainer checkpoint; leave --checkpoint-every out (a killed run starts the stage again)"
            )

    def ineffective(self) -> dict[str, str]:
        loss = ("temperature", "alpha_kd", "alpha_ce", "alpha_hidden", "hidden_loss", "alpha_attn", "layer_map")
        if not self.distill_from:
            return unused(loss, "without --distill-from")
        ignored = {} if self.alpha_hidden else unused(["hidden_loss"], "without --alpha-hidden")
        if not (self.alpha_hidden or self.alpha_attn):
            ignored.update(unused(["layer_map"], "without --alpha-hidden or --alpha-attn"))
        return ignored

    def kd(self) -> DistillConfig:
        return DistillConfig(temperature=self.temperature, alpha_ce=self.alpha_ce, alpha_kd=self.alpha_kd,
                             alpha_hidden=self.alpha_hidden, hidden_loss=self.hidden_loss,
                             alpha_attn=self.alpha_attn, layer_map=self.layer_map)  # fmt: skip


def load_finetune_inputs(config: FinetuneStageConfig, inputs: StageInputs) -> StageContext:
    return load_finetune(config, inputs.model)


@register_stage(
    "finetune",
    FinetuneStageConfig,
    "fine-tune every weight (optionally pruning gradually: prune: magnitude)",
    load=load_finetune_inputs,
    trains=True,
)
def run_finetune(context: StageContext, config: FinetuneStageConfig) -> StageResult:
    """Train ``context.model`` on ``context.data``'s training split (see ``FinetuneStageConfig``); the
    result is the plain model: LoRA merged (the input's zeros kept), gated-off heads and neurons cut out."""
    from prunekit.evaluation.summary import evaluation_fields
    from prunekit.memory import peak_rss_mb
    from prunekit.methods.speed import latency_table_for
    from prunekit.methods.stage import train_stage
    from prunekit.training.distill import check_teacher

    model, tokenizer, data, masks = context.model, context.tokenizer, context.data, context.masks
    pruning = config.pruning
    training = _resolved(config.training, context)
    adaptive = None
    if pruning.prune == "adaptive":
        if masks is not None:
            raise ConfigError("--prune adaptive: --model has unstructured masks; adaptive pruning needs a dense model")
        if pruning.adaptive_score == "lora" and not config.lora.lora:
            raise ConfigError("--adaptive-score lora scores from LoRA factors: train with --lora")
        adaptive = pruning.adaptive(training.max_length)
        if adaptive.latency_aware:
            adaptive.latency = latency_table_for(model, adaptive.round_to, pruning.latency_table)
    held = None if config.lora.lora else masks
    if pruning.prune == "magnitude":
        sparsity = SparsityCallback(held, pruning.schedule(), pruning.magnitude())
    else:
        sparsity = SparsityCallback(held)
    kd = None
    if context.teacher is not None:
        check_teacher(context.teacher, model, data.task, f"--distill-from {config.distill_from}")
        kd = config.kd()

    def evaluate(trained) -> dict:
        return evaluation_fields(context.evaluation, trained, tokenizer, data)["metrics"]

    result = train_stage(model, tokenizer, data, training, context.scratch, lora=config.lora.peft_config(model),
                         masks=masks, sparsity=sparsity, adaptive=adaptive, teacher=context.teacher, kd=kd,
                         evaluate=evaluate)  # fmt: skip
    train = {
        "samples": context.train_size,  # text corpus: blocks of max_length tokens
        "epochs": training.epochs,
        "batch_size": training.batch_size,
        "lr": training.lr,
        "warmup_ratio": training.warmup_ratio,
        "max_length": training.max_length,
        "seed": training.seed,
        **result.train_record(),
        "distill_from": config.distill_from,
        **({"distill": _distill_record(kd)} if kd is not None else {}),
        "peak_rss_mb": peak_rss_mb(),
        **({"prune_schedule": asdict(sparsity.schedule)} if sparsity.schedule is not None else {}),
    }
    fields: dict[str, Any] = {"train": train}
    if result.lora:
        fields["lora"] = {**result.lora, "targets": config.lora.lora_targets}
    if result.pruned:
        fields.update(result.pruned)
    return _trained("finetune", context, result, fields)


@dataclass
class DistillStageConfig:
    """``distill``: the teacher, the student (a model folder, or ``student_layers`` of the teacher's),
    the loss, training, LoRA and the data."""

    teacher: str | None = option(None, "fine-tuned teacher model folder")
    student_layers: int | None = option(
        None, "build the student from the teacher: keep K evenly spaced layers", parse=positive_int
    )
    loss: DistillConfig = section(DistillConfig)
    training: FinetuneConfig = section(FinetuneConfig)
    lora: LoraOptions = section(LoraOptions)
    data: DataConfig = section(DataConfig)
    runtime: DeviceConfig = section(DeviceConfig)


@register_stage(
    "distill",
    DistillStageConfig,
    "train the previous stage's model (the student) on a teacher's soft targets",
    load=lambda config, inputs: load_distill(config, inputs.model),
    trains=True,
)
def run_distill(context: StageContext, config: DistillStageConfig) -> StageResult:
    """Train ``context.model`` (the student) against ``context.teacher``."""
    from prunekit.evaluation.summary import evaluation_fields
    from prunekit.memory import peak_rss_mb
    from prunekit.methods.stage import train_stage
    from prunekit.training.distill import check_teacher

    student, teacher, tokenizer, data = context.model, context.teacher, context.tokenizer, context.data
    if teacher is None:
        raise ConfigError("distill: pass a teacher (--teacher)")
    check_teacher(teacher, student, data.task, f"--teacher {config.teacher}")
    training = _resolved(config.training, context)

    def evaluate(model) -> dict:
        return evaluation_fields(context.evaluation, model, tokenizer, data)

    result = train_stage(student, tokenizer, data, training, context.scratch, lora=config.lora.peft_config(student),
                         masks=context.masks, teacher=teacher, kd=config.loss,
                         evaluate=lambda model: evaluate(model)["metrics"])  # fmt: skip
    teacher_metrics = evaluate(teacher)["metrics"] if result.is_main else None
    train = {"samples": context.train_size, **asdict(training), **result.train_record()}
    train["peak_rss_mb"] = peak_rss_mb()
    fields: dict[str, Any] = {
        "teacher": config.teacher,
        "teacher_metrics": teacher_metrics,
        "distill": _distill_record(config.loss),
        **context.loaded_fields,
        "train": train,
    }
    if result.lora:
        fields["lora"] = {**result.lora, "targets": config.lora.lora_targets}
    return _trained("distill", context, result, fields)


def _distill_record(loss: DistillConfig) -> dict:
    return {k: v for k, v in asdict(loss).items() if k != "pairs"} | {"layer_pairs": loss.pairs}


def _resolved(training: FinetuneConfig, context: StageContext) -> FinetuneConfig:
    """The training flags with the data's token length, the device and precision, and ``auto`` made
    numbers for the data's size."""
    from dataclasses import replace

    where = context.runtime.for_training() if context.runtime is not None else {}
    return replace(training, max_length=context.evaluation.max_length, **where).resolved(context.train_size)


def _trained(kind: str, context: StageContext, result, fields: dict) -> StageResult:
    """A training stage's result: the plain model saved as ``save_stage`` does (its adapter beside it)."""
    return StageResult(kind, result.model, context.tokenizer, fields, masks=result.masks, save_format="stage",
                       is_main=result.is_main, training=result)  # fmt: skip


# ---------------------------------------------------------------- contexts from model folders


def training_data(data: DataConfig, training: FinetuneConfig, model_config, tokenizer, where: str,
                  label_names=None) -> tuple:  # fmt: skip
    """The training data (a seeded subset of ``max_train_samples``) and its size: examples, or blocks of
    max_length tokens of a text corpus for a causal LM (``model_config``, cut by ``tokenizer``). Labelled
    data is read in ``label_names``' order when given (a teacher's), else in the order its labels sort."""
    from prunekit.data import load_task_data
    from prunekit.data.text import is_text_corpus, packed_blocks
    from prunekit.stages.inputs import load_data

    if is_text_corpus(data.data, data.train, data.eval):
        corpus = load_data(model_config, data.data, where=where, need_train=True, text=True, train_file=data.train,
                           eval_file=data.eval, encoding=data.encoding)  # fmt: skip
        corpus.train.max_blocks, corpus.train.seed = training.max_train_samples, training.draw_seed
        return corpus, len(packed_blocks(tokenizer, corpus.train, data.max_length))
    options = data.task_options()
    if label_names is not None:
        options["label_names"] = label_names
    loaded = load_task_data(data.data, max_train_samples=training.max_train_samples, seed=training.draw_seed,
                            **options)  # fmt: skip
    return loaded, len(loaded.train)


def load_finetune(config: FinetuneStageConfig, model: str) -> StageContext:
    """``finetune``'s context: the model with a head for the data's labels (initialised from the training
    seed), its masks, the data, and the ``distill_from`` teacher."""
    from transformers import set_seed

    from prunekit.models import load_config, load_model, load_tokenizer, resolve_model
    from prunekit.pruning.masks import MaskSet

    config.runtime.for_training()  # a device it cannot train on fails before any data is read
    folder = resolve_model(model, "--model")
    data_config = resolved_data(config.data, [load_config(folder)])
    data, size = training_data(
        data_config, config.training, load_config(folder), load_tokenizer(folder), f"--model {model}"
    )
    set_seed(config.training.seed)  # before the classifier head is initialised
    loaded, tokenizer = load_model(model, data.task)
    teacher = load_model(config.distill_from, flag="--distill-from")[0] if config.distill_from else None
    return StageContext(loaded, tokenizer, data, masks=MaskSet.load(folder, loaded), model_name=model,
                        model_path=folder, evaluation=evaluation_settings(data_config), encoding=data_config.encoding,
                        teacher=teacher, train_size=size, runtime=config.runtime)  # fmt: skip


def load_distill(config: DistillStageConfig, student: str | None) -> StageContext:
    """``distill``'s context: the teacher, the student (a model folder, or the teacher's
    ``student_layers``), the student's masks (a sparse student stays sparse) and the data, read in the
    teacher's label order."""
    from transformers import set_seed

    from prunekit.models import load_config, load_model, resolve_model, task_label_names
    from prunekit.pruning.masks import MaskSet
    from prunekit.training.distill import masks_of_kept_layers, student_from_teacher

    if (student is None) == (config.student_layers is None):
        raise ConfigError("distill: pass --student or --student-layers (one of them)")
    config.runtime.for_training()
    teacher_folder = resolve_model(config.teacher, "--teacher")
    folders = [teacher_folder, *([resolve_model(student, "--student")] if student else [])]
    data_config = resolved_data(config.data, [load_config(folder) for folder in folders])
    teacher, tokenizer = load_model(config.teacher, flag="--teacher")
    if data_config.regression is None and teacher.config.problem_type == "regression":
        data_config.regression = True
    data, size = training_data(data_config, config.training, teacher.config, tokenizer, f"--teacher {config.teacher}",
                               label_names=task_label_names(teacher.config))  # fmt: skip
    set_seed(config.training.seed)
    if config.student_layers:
        model, kept = student_from_teacher(teacher, config.student_layers)
        masks = masks_of_kept_layers(MaskSet.load(teacher_folder, teacher), teacher, model, kept)
        name, folder = f"{config.teacher} ({config.student_layers} layers)", None
        loaded = {"student_from_teacher_layers": kept}
    else:
        model, student_tokenizer = load_model(student, flag="--student")
        if tokenizer.get_vocab() != student_tokenizer.get_vocab():
            raise ConfigError(
                f"--student {student}: its tokenizer differs from the teacher's (e.g. after vocabulary pruning); "
                "distillation feeds both the same token ids, so they need the same vocabulary"
            )
        if model.config.num_labels != teacher.config.num_labels and not data.task.causal_lm:
            raise ConfigError(
                f"--student {student}: {model.config.num_labels} labels, the teacher has {teacher.config.num_labels}"
            )
        masks, name, folder, loaded = MaskSet.load(folders[1], model), student, folders[1], {}
    return StageContext(model, tokenizer, data, masks=masks, model_name=name, model_path=folder,
                        evaluation=evaluation_settings(data_config), encoding=data_config.encoding, teacher=teacher,
                        train_size=size, loaded_fields=loaded, runtime=config.runtime)  # fmt: skip


for _name, _fixed, _help in (
    ("lora", {"lora": True}, "train LoRA adapters on the frozen model, then merge them"),
    ("adaptive", {"prune": "adaptive"}, "fine-tune while scoring and removing heads and FFN neurons"),
):
    add_stage(Stage(_name, FinetuneStageConfig, run_finetune, load_finetune_inputs, _help, trains=True,
                    fixed=tuple(_fixed.items())))  # fmt: skip
