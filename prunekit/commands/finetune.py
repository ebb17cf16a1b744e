"""``prunekit finetune``: full fine-tune (optionally pruning on a schedule); saves model + summary.json."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from functools import partial
from pathlib import Path

from prunekit.commands.common import (
    add_data_arguments,
    add_lora_arguments,
    add_output_arguments,
    add_pruning_target_arguments,
    add_training_arguments,
    count,
    data_kwargs,
    finetune_config,
    fraction,
    lora_settings,
    magnitude_config,
    param_count,
    positive,
    positive_int,
    preflight,
    print_result,
    real,
    save_and_merge_lora,
)
from prunekit.errors import ConfigError


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
    group.add_argument("--prune-start", type=count, default=0, help="optimizer step of the first pruning")
    group.add_argument("--prune-end", type=count, help="step reaching the target (default: 2/3 of training)")
    group.add_argument("--prune-every", type=positive_int, default=10, help="steps between pruning steps")
    add_pruning_target_arguments(group)
    group.add_argument("--sparsity", type=fraction, default=0.5, help="magnitude: final sparsity (default 0.5)")
    group.add_argument("--initial-sparsity", type=fraction, default=0.0, help="magnitude: sparsity at --prune-start")
    group.add_argument("--heads", type=real(0, 1, low_open=True), help="adaptive: fraction of attention heads to keep")
    group.add_argument("--ffn", type=real(0, 1, low_open=True), help="adaptive: fraction of FFN neurons to keep")
    group.add_argument("--params-budget", type=param_count, help="adaptive: total parameters to keep, e.g. 15M")
    group.add_argument("--round-to", type=positive_int, default=32, help="adaptive: FFN widths a multiple of this")
    group.add_argument("--min-heads", type=count, default=1, help="adaptive: heads every layer keeps at least")
    group.add_argument("--min-ffn", type=count, default=1, help="adaptive: FFN neurons every layer keeps at least")
    group.add_argument(
        "--score-ema", type=real(0, 1, high_open=True), default=0.85, help="adaptive: EMA factor of the scores"
    )
    group = p.add_argument_group("distillation while fine-tuning (see `prunekit distill` for all loss options)")
    group.add_argument("--distill-from", metavar="TEACHER", help="fine-tuned teacher: add its soft targets to the loss")
    group.add_argument("--temperature", type=positive, default=2.0)
    group.add_argument("--alpha-kd", type=real(0, 1), default=0.5, help="soft-target weight; the task loss gets 1 - it")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> dict:
    from transformers import set_seed

    from prunekit.data import load_task_data
    from prunekit.evaluation import evaluate_model, make_summary, model_size, peak_memory_mb
    from prunekit.io import atomic_output_dir, work_dir, write_json_atomic
    from prunekit.methods.adaptive import remove_pruned_units
    from prunekit.models import count_parameters, load_model
    from prunekit.pruned_models import save_pruned
    from prunekit.pruning.masks import MaskSet
    from prunekit.training import finetune
    from prunekit.training.lora import attach_lora, trainable_parameters

    folders = preflight(args, {"--model": args.model, "--distill-from": args.distill_from})
    if args.lora and args.prune == "magnitude":
        raise ConfigError(
            "--prune magnitude with --lora: prune first (prunekit prune), then fine-tune the result with --lora"
        )
    config = finetune_config(args)
    data = load_task_data(args.data, max_train_samples=args.max_train_samples, seed=args.seed, **data_kwargs(args))
    set_seed(args.seed)  # before the classifier head is initialised
    model, tokenizer = load_model(args.model, data.task)
    masks = MaskSet.load(folders["--model"], model)
    adaptive = _adaptive_callback(args, masks)
    lora = lora_settings(args, model)
    # LoRA: the base is frozen and its masked layers add only M ⊙ ΔW; full training: masks held per step.
    trained = attach_lora(model, lora, masks) if lora else model
    callback = _sparsity_callback(args, None if lora else masks)
    callbacks = [callback, *([adaptive] if adaptive else [])]
    with work_dir("finetune") as scratch:
        if args.distill_from:
            from prunekit.training.distill import DistillConfig, distill

            teacher, _ = load_model(args.distill_from, flag="--distill-from")
            kd = DistillConfig(temperature=args.temperature, alpha_ce=1 - args.alpha_kd, alpha_kd=args.alpha_kd)
            trainer = distill(trained, teacher, tokenizer, data.train, data.task, config, kd, scratch, callbacks)
        else:
            trainer = finetune(trained, tokenizer, data.train, data.task, config, scratch, callbacks=callbacks)
    if not trainer.is_world_process_zero():
        return {}
    trainable = trainable_parameters(trained)  # before merging folds the adapters away
    if not lora:
        masks = callback.masks  # gradual pruning may have grown them
    state = trainer.state
    lora_fields = {}
    with atomic_output_dir(args.out, args.overwrite) as tmp:
        evaluate = partial(
            evaluate_model, tokenizer=tokenizer, split=data.eval, task=data.task, max_length=config.max_length
        )
        if lora:
            model, lora_fields = save_and_merge_lora(args, trained, masks, tmp, evaluate)
        structured = {}
        if adaptive:  # the gated-off heads and neurons are cut out: the model gets smaller and faster
            params_before = count_parameters(model)[0]
            structure = remove_pruned_units(model, adaptive)
            structured = {"params_before": params_before, "structure": structure, "adaptive": adaptive.report()}
        metrics = evaluate(model)
        if adaptive:
            structured["save_format"] = save_pruned(model, tmp)
        else:
            model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if masks is not None:
            masks.save(tmp)
        summary = make_summary(
            "finetune",
            args.model,
            data.task.name,
            metrics=metrics,
            main_metric=data.task.main_metric,
            **model_size(model, tmp),
            **(masks.report() if masks is not None else {}),
            eval_samples=len(data.eval),
            train={
                "samples": len(data.train),
                "epochs": config.epochs,
                "steps": state.global_step,
                "batch_size": config.batch_size,
                "world_size": trainer.args.world_size,
                "lr": config.lr,
                "max_length": config.max_length,
                "seed": config.seed,
                "runtime_s": round(state.log_history[-1].get("train_runtime", 0.0), 2),
                "loss": state.log_history[-1].get("train_loss"),
                "distill_from": args.distill_from,
                "trainable_params": trainable,
                "peak_rss_mb": peak_memory_mb(),
                **({"prune_schedule": asdict(callback.schedule)} if callback.schedule is not None else {}),
            },
            **({"lora": lora_fields} if lora else {}),
            **structured,
        )
        write_json_atomic(Path(tmp) / "summary.json", summary)
    print_result(summary, f"saved to {args.out}" + (" (LoRA adapter in its adapter/ folder)" if lora else ""))
    return summary


def _adaptive_callback(args: argparse.Namespace, masks):
    """With ``--prune adaptive``: the callback that scores, gates and finally removes heads / neurons."""
    from prunekit.methods.adaptive import AdaptiveConfig, AdaptivePruningCallback

    if args.prune != "adaptive":
        return None
    if masks is not None:
        raise ConfigError("--prune adaptive: --model has unstructured masks; adaptive pruning needs a dense model")
    if args.scope == "row":
        raise ConfigError("--prune adaptive --scope row: expected global (ranked across layers) or layer (uniform)")
    config = AdaptiveConfig(
        heads=args.heads,
        ffn=args.ffn,
        params_budget=args.params_budget,
        scope="uniform" if args.scope == "layer" else "global",
        min_heads=args.min_heads,
        min_ffn=args.min_ffn,
        round_to=args.round_to,
        beta=args.score_ema,
        start=args.prune_start,
        end=args.prune_end,
        every=args.prune_every,
    )
    return AdaptivePruningCallback(config)


def _sparsity_callback(args: argparse.Namespace, masks):
    """Holds the input model's ``masks`` (if any) and, with ``--prune``, grows them on schedule
    (ending at 2/3 of the Trainer's real step count unless ``--prune-end`` is given)."""
    from prunekit.pruning.schedules import CubicSchedule
    from prunekit.training.callbacks import SparsityCallback

    if args.prune != "magnitude":
        return SparsityCallback(masks)
    pruning = magnitude_config(args)
    schedule = CubicSchedule(
        pruning.sparsity, args.prune_start, args.prune_end, args.prune_every, args.initial_sparsity
    )
    return SparsityCallback(masks, schedule, pruning)
