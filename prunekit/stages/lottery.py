"""The ``lottery`` stage: iterative magnitude pruning with rewinding, its controls, resumable rounds
(``methods.lottery``). It writes its own folder — rounds land one by one in ``.OUT.partial`` beside
``out``, which replaces ``out`` once the last round is done — with the winning ticket in ``ticket/``."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from prunekit.devices import DeviceConfig
from prunekit.errors import ConfigError
from prunekit.methods.lottery import LotteryConfig
from prunekit.options import option, positive_int, section
from prunekit.stages.base import StageContext, StageInputs, StageResult, register_stage
from prunekit.stages.inputs import DataConfig, evaluation_settings, resolved_data
from prunekit.training.config import FinetuneConfig
from prunekit.training.lora import LoraOptions

CONFIG_FILE = "lottery_config.json"
TICKET_DIR = "ticket"


@dataclass
class LotteryStageConfig:
    """``lottery``: the search (``LotteryConfig``), how each round trains, and the data."""

    lottery: LotteryConfig = section(LotteryConfig)
    steps_per_round: int | None = option(None, "optimizer steps per training (default: --epochs)", parse=positive_int)
    no_controls: bool = option(False, "skip the random-mask and one-shot controls", switch=True)
    lora: LoraOptions = section(LoraOptions)  # each round trains LoRA adapters, merged into the weights
    lora_rank: int | None = option(None, "--lora --lora-r N", parse=positive_int, hidden=True)  # older spelling
    training: FinetuneConfig = section(FinetuneConfig)
    data: DataConfig = section(DataConfig)
    runtime: DeviceConfig = section(DeviceConfig)

    def __post_init__(self) -> None:
        if self.lora_rank is not None:
            self.lora = replace(self.lora, lora=True, lora_r=self.lora_rank)
        self.lora_rank = self.lora.lora_r if self.lora.lora else None

    def search(self) -> LotteryConfig:
        """The search settings with the controls switch and the training seed."""
        config = replace(self.lottery, controls=not self.no_controls, seed=self.training.seed)
        if self.lora.lora and config.rewind_step:
            raise ConfigError("--lora: late rewinding (--rewind step:K) needs full training; use --rewind init")
        return config


@register_stage(
    "lottery",
    LotteryStageConfig,
    "iterative magnitude pruning with rewinding; the winning ticket goes on",
    load=lambda config, inputs: load_lottery(config, inputs),
    trains=True,
    omit=("max_steps", "checkpoint_every"),  # steps_per_round; rounds are its checkpoints
)
def run_lottery(context: StageContext, config: LotteryStageConfig) -> StageResult:
    """Search for a winning ticket of ``context.model`` (its head initialised from the training seed),
    writing rounds to ``context.out`` (``context.resume`` continues after the last finished round)."""
    from prunekit.evaluation import evaluate_model, make_summary, model_size
    from prunekit.io import atomic_output_dir, replace_dir, staging_dir, work_dir, write_json_atomic
    from prunekit.methods.gradual import SparsityCallback
    from prunekit.methods.lottery import LotteryRun, load_round_weights
    from prunekit.pruning.masks import MaskSet
    from prunekit.report import plot_lottery
    from prunekit.training import finetune
    from prunekit.training.lora import finetune_lora_merged

    started = time.perf_counter()
    search_config = config.search()
    model, tokenizer, data = context.model, context.tokenizer, context.data
    training = replace(config.training, max_length=context.evaluation.max_length, max_steps=config.steps_per_round,
                       **config.runtime.for_training()).resolved(context.train_size)  # fmt: skip
    out = Path(context.out)
    settings = {
        **asdict(search_config),
        **asdict(training),
        "model": context.model_name,
        "data": config.data.data,
        "max_train_samples": config.training.max_train_samples,
        "lora_rank": config.lora_rank,
        "lora": asdict(config.lora) if config.lora.lora else None,
    }
    # Rounds are written to a staging folder beside out, which replaces out only once all is done.
    staging = staging_dir(out, settings, CONFIG_FILE, context.resume, context.overwrite, may_change=("rounds",))

    def train(model, masks, callbacks) -> None:
        with work_dir("lottery") as scratch:
            if not config.lora.lora:
                hold = SparsityCallback(masks)
                finetune(model, tokenizer, data.train, data.task, training, scratch, [hold, *callbacks])
            else:  # the frozen base keeps its zeros; the masked LoRA update adds none
                lora = config.lora.peft_config(model)
                finetune_lora_merged(model, tokenizer, data.train, data.task, training, scratch, lora, masks=masks)

    def evaluate(model) -> float:
        metrics = evaluate_model(model, tokenizer, data.eval, data.task, max_length=training.max_length, progress=False)
        return metrics[data.task.main_metric]

    search = LotteryRun(model, search_config, staging, train, evaluate, tokenizer, context.masks)
    rounds = [asdict(r) for r in search.run(resume=context.resume)]
    plot_lottery(rounds, data.task.main_metric, staging / "lottery.png", search_config.tolerance)

    winner = search.winning_round()
    ticket = None
    if winner is not None:
        load_round_weights(model, search.round_dir(winner.round))
        masks = MaskSet.load(search.round_dir(winner.round), model)
        with atomic_output_dir(staging / TICKET_DIR, overwrite=True) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            masks.save(tmp)
            ticket_summary = make_summary(
                "lottery-ticket",
                context.model_name,
                data.task.name,
                metrics={data.task.main_metric: winner.ticket},
                main_metric=data.task.main_metric,
                round=winner.round,
                **model_size(model, tmp),
                **masks.report(),
            )
            write_json_atomic(Path(tmp) / "summary.json", ticket_summary)
        ticket = {"round": winner.round, "sparsity": winner.sparsity, "path": str(out / TICKET_DIR)}
    summary = make_summary(
        "lottery",
        context.model_name,
        data.task.name,
        main_metric=data.task.main_metric,
        dense=rounds[0]["ticket"],
        rounds=rounds,
        winning_ticket=ticket,
        config=asdict(search_config),
        train={"samples": context.train_size, **asdict(training)},
        eval_samples=len(data.eval),
        search_seconds=round(time.perf_counter() - started, 1),
        **config.runtime.record(),
    )
    write_json_atomic(staging / "summary.json", summary)
    replace_dir(staging, out)
    return StageResult("lottery", model, tokenizer, save_format="written", summary=summary)


def load_lottery(config: LotteryStageConfig, inputs: StageInputs) -> StageContext:
    """``lottery``'s context: the data, the model with a head for its labels (θ0 is reproducible: the head
    is initialised from the training seed), the input's masks (held in every round), and where the
    rounds go."""
    from transformers import set_seed

    from prunekit.data import load_task_data
    from prunekit.models import load_config, load_model, resolve_model
    from prunekit.pruning.masks import MaskSet

    config.search()  # settings that contradict each other fail before any data is read
    config.runtime.for_training()
    model = inputs.model
    folder = resolve_model(model, "--model")
    data_config = resolved_data(config.data, [load_config(folder)])
    data = load_task_data(data_config.data, max_train_samples=config.training.max_train_samples,
                          seed=config.training.draw_seed, **data_config.task_options())  # fmt: skip
    set_seed(config.training.seed)  # before the classifier head is initialised: θ0 is reproducible
    loaded, tokenizer = load_model(model, data.task)
    return StageContext(loaded, tokenizer, data, masks=MaskSet.load(folder, loaded), model_name=model,
                        model_path=folder, evaluation=evaluation_settings(data_config), train_size=len(data.train),
                        out=inputs.out, resume=inputs.resume, overwrite=inputs.overwrite,
                        runtime=config.runtime)  # fmt: skip
