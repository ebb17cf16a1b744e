"""``prunekit finetune``: full fine-tune (optionally pruning on a schedule); saves model + summary.json."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from prunekit.commands.common import (
    add_data_arguments,
    add_lora_arguments,
    add_output_arguments,
    add_training_arguments,
    data_kwargs,
    finetune_config,
    load_text_training_data,
    lora_settings,
    preflight,
    print_result,
    training_dir,
)
from prunekit.errors import ConfigError
from prunekit.evaluation.summary import evaluation_fields
from prunekit.methods.adaptive import AdaptiveConfig
from prunekit.methods.gradual import SparsityCallback
from prunekit.methods.magnitude import MagnitudeConfig
from prunekit.options import add_config_arguments, config_from_args, real
from prunekit.pruning.schedules import CubicSchedule
from prunekit.training.distill_config import DistillConfig


def add_parser(commands) -> None:
    p = commands.add_parser("finetune", help="full fine-tune on a task; saves the model and summary.json")
    p.add_argument("--model", default="minilm", help="model folder, 'minilm' (packaged, default), or hub id")
    add_output_arguments(p)
    add_data_arguments(p, with_train=True)
    add_training_arguments(p)
    add_lora_arguments(p)
    group = p.add_argument_group("pruning while fine-tuning (cubic schedule, Zhu & Gupta)")
    group.add_argument(
        "--prune",
        choices=["magnitude", "adaptive"],
        help="magnitude: unstructured, gradual; adaptive: heads and FFN neurons scored during training and "
        "removed, allocation across layers from the scores",
    )
    add_config_arguments(group, CubicSchedule)
    group = p.add_argument_group("--prune magnitude")
    add_config_arguments(group, MagnitudeConfig, skip=("importance", "block_size", "dampening"))
    group = p.add_argument_group("--prune adaptive", "--scope: global (default) or layer (the same widths everywhere)")
    add_config_arguments(group, AdaptiveConfig, skip=("scope", "start", "end", "every"))
    group = p.add_argument_group("distillation while fine-tuning (see `prunekit distill` for all loss options)")
    group.add_argument("--distill-from", metavar="TEACHER", help="fine-tuned teacher: add its soft targets to the loss")
    add_config_arguments(group, DistillConfig, only=("temperature",))
    group.add_argument("--alpha-kd", type=real(0, 1), default=0.5, help="soft-target weight; the task loss gets 1 - it")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> dict:
    from transformers import set_seed

    from prunekit.evaluation import make_summary, model_size, peak_memory_mb
    from prunekit.io import atomic_output_dir, write_json_atomic
    from prunekit.methods.stage import save_stage, train_stage
    from prunekit.models import load_model
    from prunekit.pruning.masks import MaskSet
    from prunekit.training.distill import check_teacher

    folders = preflight(args, {"--model": args.model, "--distill-from": args.distill_from})
    if args.lora and args.prune == "magnitude":
        raise ConfigError(
            "--prune magnitude with --lora: prune first (prunekit prune), then fine-tune the result with --lora"
        )
    data, train_size = _training_data(args, folders["--model"])
    config = finetune_config(args, train_size=train_size)
    set_seed(args.seed)  # before the classifier head is initialised
    model, tokenizer = load_model(args.model, data.task)
    masks = MaskSet.load(folders["--model"], model)
    adaptive = _adaptive_config(args, masks, model)
    sparsity = _sparsity_callback(args, None if args.lora else masks)
    teacher = kd = None
    if args.distill_from:
        teacher, _ = load_model(args.distill_from, flag="--distill-from")
        check_teacher(teacher, model, data.task, f"--distill-from {args.distill_from}")
        kd = DistillConfig(temperature=args.temperature, alpha_ce=1 - args.alpha_kd, alpha_kd=args.alpha_kd)

    def evaluate(trained) -> dict:
        return evaluation_fields(args, trained, tokenizer, data)["metrics"]

    with training_dir(args, "finetune") as scratch:
        result = train_stage(
            model,
            tokenizer,
            data,
            config,
            scratch,
            lora=lora_settings(args, model),
            masks=masks,
            sparsity=sparsity,
            adaptive=adaptive,
            teacher=teacher,
            kd=kd,
            evaluate=evaluate,
        )
        if not result.is_main:
            return {}
        with atomic_output_dir(args.out, args.overwrite) as tmp:
            evaluation = evaluation_fields(args, result.model, tokenizer, data)
            save_format = save_stage(result, tokenizer, tmp)
            masks = result.masks
            summary = make_summary(
                "finetune",
                args.model,
                data.task.name,
                model_path=folders["--model"],
                **evaluation,
                **model_size(result.model, tmp),
                **(masks.report() if masks is not None else {}),
                train={
                    "samples": train_size,  # text corpus: blocks of max_length tokens
                    "epochs": config.epochs,
                    "batch_size": config.batch_size,
                    "lr": config.lr,
                    "warmup_ratio": config.warmup_ratio,
                    "max_length": config.max_length,
                    "seed": config.seed,
                    **result.train_record(),
                    "distill_from": args.distill_from,
                    "peak_rss_mb": peak_memory_mb(),
                    **({"prune_schedule": asdict(sparsity.schedule)} if sparsity.schedule is not None else {}),
                },
                **({"lora": {**result.lora, "targets": args.lora_targets}} if result.lora else {}),
                **({**result.pruned, "save_format": save_format} if result.pruned else {}),
            )
            write_json_atomic(Path(tmp) / "summary.json", summary)
    footer = f"saved to {args.out}" + (" (LoRA adapter in its adapter/ folder)" if result.lora else "")
    print_result(summary, footer)
    return summary


def _training_data(args: argparse.Namespace, folder: str) -> tuple:
    """The task data and the number of training examples (a text corpus: blocks of --max-length tokens)."""
    from prunekit.data import load_task_data
    from prunekit.data.text import is_text_corpus

    if is_text_corpus(args.data, args.train_file, args.eval_file):
        return load_text_training_data(args, folder)
    data = load_task_data(args.data, max_train_samples=args.max_train_samples, seed=args.seed, **data_kwargs(args))
    return data, len(data.train)


def _adaptive_config(args: argparse.Namespace, masks, model):
    """With ``--prune adaptive``: what to keep and how (heads / neurons scored, gated, then removed)."""
    from prunekit.methods.speed import measure_latency_table

    if args.prune != "adaptive":
        return None
    if masks is not None:
        raise ConfigError("--prune adaptive: --model has unstructured masks; adaptive pruning needs a dense model")
    if args.adaptive_score == "lora" and not args.lora:
        raise ConfigError("--adaptive-score lora scores from LoRA factors: train with --lora")
    if args.scope == "row":
        raise ConfigError("--prune adaptive --scope row: expected global (ranked across layers) or layer (uniform)")
    config = config_from_args(
        AdaptiveConfig, args, scope="uniform" if args.scope == "layer" else "global", flops_seq_len=args.max_length
    )
    if config.latency_aware:
        config.latency = measure_latency_table(model, (32, args.max_length), config.round_to)
    return config


def _sparsity_callback(args: argparse.Namespace, masks) -> SparsityCallback:
    """Holds the input model's ``masks`` (if any) and, with ``--prune magnitude``, grows them on schedule
    (ending at 2/3 of the Trainer's real step count unless ``--prune-end`` is given)."""
    if args.prune != "magnitude":
        return SparsityCallback(masks)
    pruning = config_from_args(MagnitudeConfig, args)
    return SparsityCallback(masks, config_from_args(CubicSchedule, args, final_sparsity=pruning.sparsity), pruning)
