"""``prunekit compress``: the recommended workflow in one command — LoRA fine-tune → adaptive pruning
(LoRA, distilled from the LoRA-tuned teacher) → final fine-tune (distilled) — then evaluated and timed
against the dense model. See ``prunekit.methods.workflow``."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from prunekit.commands.common import (
    add_data_arguments,
    add_output_arguments,
    data_kwargs,
    load_text_training_data,
    preflight,
)
from prunekit.errors import ConfigError
from prunekit.evaluation.summary import evaluation_fields
from prunekit.methods.workflow import Target, WorkflowConfig
from prunekit.options import add_config_arguments, config_from_args, positive_int, real, seed

CONFIG_FILE = "compress_config.json"
SHAPES = ((32, 128), (1, 128))  # latency ratios: a throughput batch and a single request
TARGET_FLAGS = [field.name for field in fields(Target)]  # --speedup aside


ALLOCATION = ("scope", "round_to", "min_heads", "min_ffn", "score_ema", "adaptive_score", "prune_with")


def add_workflow_arguments(p: argparse.ArgumentParser) -> None:
    """Target and training flags shared by ``compress`` and ``study ordering`` (``Target``'s and
    ``WorkflowConfig``'s fields)."""
    group = p.add_argument_group(
        "target (one of --speedup, --heads/--ffn, --params-budget, --flops-budget, --sparsity)"
    )
    group.add_argument(
        "--speedup",
        type=real(1, low_open=True),
        help="latency target, e.g. 2: the keep fraction is found by timing pruned copies here, and checked at the end",
    )
    add_config_arguments(group, Target)
    add_config_arguments(group, WorkflowConfig, only=ALLOCATION)
    group.add_argument(
        "--latency-aware",
        action="store_true",
        help="time every width a layer may keep (batch 32 x 128) and let widths differ across layers only where "
        "the scores gain and it costs no time over uniform widths",
    )
    group = p.add_argument_group("training")
    group.add_argument("--max-train-samples", type=positive_int, help="train on a seeded random subset of N")
    add_config_arguments(group, WorkflowConfig, skip=ALLOCATION)
    group.add_argument("--resume", action="store_true", help="continue a killed run in --out after its last stage")


def add_parser(commands) -> None:
    p = commands.add_parser(
        "compress",
        help="LoRA fine-tune -> adaptive pruning -> final fine-tune with distillation, timed against the dense model",
    )
    p.add_argument("--model", default="minilm", help="pretrained model folder, 'minilm' (default) or hub id")
    add_output_arguments(p)
    add_data_arguments(p, with_train=True)
    add_workflow_arguments(p)
    p.add_argument("--seed", type=seed, default=42)
    p.add_argument(
        "--control", action="store_true", help="also train the equal-budget dense control (same total steps)"
    )
    p.add_argument("--threads", type=positive_int, help="threads for the latency measurements (default: torch's)")
    p.set_defaults(handler=run)


def workflow_config(args: argparse.Namespace, train_size: int, order: str, seed: int, target, latency=None):
    """The ``WorkflowConfig`` the flags ask for; ``--stage-steps auto`` resolved for ``train_size``."""
    fixed = dict(target=target, order=order, seed=seed, max_length=args.max_length, latency=latency)
    return config_from_args(WorkflowConfig, args, **fixed).resolved(train_size)


def resolve_target(args: argparse.Namespace, model, config_file: str) -> tuple:
    """The ``Target`` and, with ``--speedup``, how its keep fraction was found (measured once: a
    ``--resume`` reuses what the interrupted run measured)."""
    from prunekit.methods.speed import check_single_process, keep_fraction_for_speedup

    fixed = [flag for flag in TARGET_FLAGS if getattr(args, flag) is not None]
    if args.speedup is not None:
        if fixed:
            raise ConfigError(f"--speedup sets the widths itself: leave out --{fixed[0].replace('_', '-')}")
        check_single_process("--speedup")
        saved = _saved(Path(args.out), config_file, "speedup_plan") if args.resume else None
        if saved is not None and saved["target"] == args.speedup:
            return Target(heads=saved["keep_fraction"], ffn=saved["keep_fraction"]), saved
        fraction, timings = keep_fraction_for_speedup(model, args.speedup, SHAPES[0], args.round_to, args.threads)
        plan = {"target": args.speedup, "keep_fraction": fraction, "uniform_timings": timings, "shape": SHAPES[0]}
        return Target(heads=fraction, ffn=fraction), plan
    return config_from_args(Target, args), None


def _saved(out: Path, config_file: str, key: str):
    """What an interrupted (or finished) run of ``out`` measured and recorded under ``key``, if anything."""
    import json

    for folder in (out.parent / f".{out.name}.partial", out):
        try:
            return json.loads((folder / config_file).read_text()).get(key)
        except (OSError, ValueError):
            continue
    return None


def resolve_latency(args: argparse.Namespace, model, config_file: str):
    """With ``--latency-aware``: the per-width latency table, measured once (a ``--resume`` reuses it)."""
    from prunekit.methods.speed import LatencyTable, check_single_process, measure_latency_table

    if not args.latency_aware:
        return None
    if args.sparsity is not None:
        raise ConfigError("--latency-aware allocates heads and neurons: not for an unstructured --sparsity")
    check_single_process("--latency-aware")
    saved = _saved(Path(args.out), config_file, "latency") if args.resume else None
    if saved is not None:
        return LatencyTable.from_dict(saved)
    return measure_latency_table(model, SHAPES[0], args.round_to, args.threads)


def prepare(args: argparse.Namespace, config_file: str, data_seed: int, command: str) -> tuple:
    """What ``compress`` and ``study`` do before any training: checks, data, the dense model (the
    timing reference), the target; returns ``data, train_size, dense, target, plan, latency, evaluate``
    (``train_size``: training examples, or blocks of --max-length tokens of a text corpus)."""
    from prunekit.data import load_task_data
    from prunekit.data.text import is_text_corpus
    from prunekit.models import load_config, load_model, max_positions

    own_result = args.resume and (Path(args.out) / config_file).is_file()
    folder = preflight(args, {"--model": args.model}, replaces_out=own_result)["--model"]
    limit = max_positions(load_config(folder))
    if limit is not None and limit < max(length for _, length in SHAPES):  # known now, not after training
        shapes = " and ".join(_shape_key(shape) for shape in SHAPES)
        raise ConfigError(
            f"--model {args.model}: takes at most {limit} tokens, and {command} times every model at "
            f"batch x length {shapes}"
        )
    text = is_text_corpus(args.data, args.train, args.eval)
    if args.speedup is None and all(getattr(args, f) is None for f in TARGET_FLAGS):
        raise ConfigError(
            f"{command}: pass a target: --speedup, --heads/--ffn, --params-budget, --flops-budget or --sparsity"
        )
    if text:  # a causal LM on a text corpus: packed blocks of --max-length tokens, perplexity
        data, train_size = load_text_training_data(args, folder, seed=data_seed)
    else:
        data = load_task_data(args.data, max_train_samples=args.max_train_samples, seed=data_seed, **data_kwargs(args))
        train_size = len(data.train)
    dense, tokenizer = load_model(args.model, data.task)
    target, plan = resolve_target(args, dense, config_file)
    latency = resolve_latency(args, dense, config_file)

    def evaluate(model) -> dict:
        return evaluation_fields(args, model, tokenizer, data)["metrics"]

    return data, train_size, dense, target, plan, latency, evaluate


def run(args: argparse.Namespace) -> dict:
    from dataclasses import asdict

    from prunekit.io import replace_dir, staging_dir, write_json_atomic
    from prunekit.methods.workflow import Workflow, dense_control, time_stages

    out = Path(args.out)
    data, train_size, dense, target, plan, latency, evaluate = prepare(args, CONFIG_FILE, args.seed, "compress")
    config = workflow_config(args, train_size, "joint", args.seed, target, latency)
    settings = {"model": args.model, "data": args.data, "max_train_samples": args.max_train_samples, **asdict(config)}
    settings["speedup_plan"] = plan
    staging = staging_dir(out, settings, CONFIG_FILE, args.resume, args.overwrite)
    workflow = Workflow(config, args.model, data, staging, evaluate, args.resume)
    rows = workflow.run()
    control = dense_control(args.model, data, config, staging, evaluate, args.resume) if args.control else None
    if not rows:  # not the main process under torchrun
        return {}
    time_stages(dense, [*rows, *([control] if control else [])], staging, SHAPES, args.threads)
    summary = _summary(args, data.task, config, rows, control, plan)
    write_json_atomic(staging / "summary.json", summary)
    replace_dir(staging, out)
    _print_table(summary)
    return summary


def _summary(args, task, config, rows, control, plan) -> dict:
    """summary.json: the final model's result on top, then one row per stage (and the control)."""
    from dataclasses import asdict

    from prunekit.evaluation import make_summary

    final = rows[-1]
    metric = task.main_metric
    teacher = next(row for row in rows if row.stage == "teacher")
    relative = {"teacher": round(final.metrics[metric] / teacher.metrics[metric], 4)}
    if control is not None:
        relative["control"] = round(final.metrics[metric] / control.metrics[metric], 4)
    speedup = dict(plan or {})
    if plan is not None:
        measured = final.extra["speedup"][_shape_key(SHAPES[0])]
        speedup.update(measured=measured, met=measured >= plan["target"])
    return make_summary(
        "compress",
        args.model,
        task.name,
        metrics=final.metrics,
        main_metric=metric,
        params_total=final.params_total,
        params_nonzero=final.params_nonzero,
        size_bytes=final.size_bytes,
        final="final",
        relative=relative,
        speedup=speedup or None,
        target=asdict(config.target),
        stage_steps=config.stage_steps,
        total_steps=final.total_steps,
        stages=[asdict(row) for row in rows],
        control=asdict(control) if control is not None else None,
        config={k: v for k, v in asdict(config).items() if k != "target"},
    )


def _shape_key(shape: tuple[int, int]) -> str:
    return f"{shape[0]}x{shape[1]}"


def _print_table(summary: dict) -> None:
    metric = summary["main_metric"]
    rows = [*summary["stages"], *([summary["control"]] if summary["control"] else [])]
    keys = [_shape_key(shape) for shape in SHAPES]
    print(f"compress: {summary['model']} on {summary['task']} ({metric}); speed-up vs dense at batch x length")
    speed_header = " ".join(f"{k:>9}" for k in keys)
    print(f"  {'stage':<9} {'steps':>6} {metric:>10} {'params':>12} {'size MB':>8} {speed_header}")
    for row in rows:
        size = f"{row['size_bytes'] / 1e6:.1f}" if row["size_bytes"] else "-"
        speed = " ".join(f"{row['extra']['speedup'][k]:>8.2f}x" for k in keys)
        print(
            f"  {row['stage']:<9} {row['total_steps']:>6} {row['metrics'][metric]:>10.4f} {row['params_total']:>12,} "
            f"{size:>8} {speed}"
        )
    relative = summary["relative"]
    if metric == "perplexity":  # lower is better: say it as a ratio
        line = f"final perplexity is {relative['teacher']:.2f}x the LoRA-tuned dense teacher's"
        if "control" in relative:
            line += f" and {relative['control']:.2f}x the equal-budget dense control's"
    else:
        line = f"final keeps {relative['teacher']:.1%} of the LoRA-tuned dense teacher"
        if "control" in relative:
            line += f" and {relative['control']:.1%} of the equal-budget dense control"
    print(line)
    speedup = summary["speedup"]
    if speedup:
        verdict = "met" if speedup["met"] else "MISSED"
        measured = speedup["measured"]
        print(f"speed-up target {speedup['target']:g}x at batch {keys[0]}: measured {measured:.2f}x ({verdict})")
