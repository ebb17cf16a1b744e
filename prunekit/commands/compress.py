"""``prunekit compress``: the recommended workflow in one command — LoRA fine-tune → adaptive pruning
(LoRA, distilled from the LoRA-tuned teacher) → final fine-tune (distilled) — then evaluated and timed
against the dense model. It is the ``joint`` order written as a recipe (``prunekit.recipes.orders``) and
run by the recipe runner, in ``.OUT.partial`` until it is complete."""

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
from prunekit.devices import DeviceConfig
from prunekit.errors import ConfigError
from prunekit.evaluation.bench import SHAPE
from prunekit.options import add_config_arguments, config_from_args, real
from prunekit.recipes.orders import Target, WorkflowConfig
from prunekit.stages.bench import TimingConfig
from prunekit.training.config import FinetuneConfig

CONFIG_FILE = "compress_config.json"
SHAPES = (SHAPE, (1, SHAPE[1]))  # latency ratios: a throughput batch and a single request
TARGET_FLAGS = [field.name for field in fields(Target)]  # --speedup aside


ALLOCATION = ("scope", "round_to", "min_heads", "min_ffn", "score_ema", "adaptive_score", "prune_with", "latency_aware")


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
    group = p.add_argument_group("training")
    add_config_arguments(group, FinetuneConfig, only=("max_train_samples",))
    add_config_arguments(group, WorkflowConfig, skip=ALLOCATION)
    add_config_arguments(p.add_argument_group("device (every stage; the timing runs on the CPU)"), DeviceConfig)
    add_config_arguments(p.add_argument_group("timing (batch 32 x 128 and 1 x 128, on the CPU)"), TimingConfig,
                         only=("threads",))  # fmt: skip
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
    add_config_arguments(p, FinetuneConfig, only=("seed",))
    p.add_argument(
        "--control", action="store_true", help="also train the equal-budget dense control (same total steps)"
    )
    p.set_defaults(handler=run)


def workflow_config(args: argparse.Namespace, train_size: int, order: str, seed: int, target, data_seed=None):
    """The ``WorkflowConfig`` the flags ask for; ``--stage-steps auto`` resolved for ``train_size``."""
    fixed = dict(target=target, order=order, seed=seed, max_length=args.max_length, data_seed=data_seed,
                 max_train_samples=args.max_train_samples)  # fmt: skip
    return config_from_args(WorkflowConfig, args, **fixed).resolved(train_size)


def data_options(args: argparse.Namespace) -> dict:
    """The data and device flags every stage reads with (the data itself goes to the runner)."""
    from dataclasses import asdict

    from prunekit.stages.inputs import DataConfig

    reading = {key: value for key, value in asdict(config_from_args(DataConfig, args)).items() if key != "data"}
    device = config_from_args(DeviceConfig, args)
    device.for_training()  # a device the stages cannot train on fails before any work
    return {**reading, **{k: v for k, v in asdict(device).items() if v != getattr(DeviceConfig, k)}}


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


def prepare(args: argparse.Namespace, config_file: str, data_seed: int, command: str) -> tuple:
    """What ``compress`` and ``study`` do before any training: checks, data, the dense model (the
    timing reference), the target; returns ``data, train_size, dense, target, plan`` (``train_size``:
    training examples, or blocks of --max-length tokens of a text corpus)."""
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
    dense, _ = load_model(args.model, data.task)
    target, plan = resolve_target(args, dense, config_file)
    if args.latency_aware:  # an unstructured target with it is refused by WorkflowConfig
        from prunekit.methods.speed import check_single_process

        check_single_process("--latency-aware")
    return data, train_size, dense, target, plan


def run(args: argparse.Namespace) -> dict:
    from dataclasses import asdict, replace

    from prunekit.io import replace_dir, staging_dir, write_json_atomic
    from prunekit.recipes.orders import CONTROL, order_recipe, stage_rows, stages_of
    from prunekit.recipes.runner import is_main_process, run_stages
    from prunekit.report.run_report import write_report

    out = Path(args.out)
    data, train_size, dense, target, plan = prepare(args, CONFIG_FILE, args.seed, "compress")
    config = workflow_config(args, train_size, "joint", args.seed, target)
    reading = data_options(args)
    latency = latency_table(args, dense, CONFIG_FILE)
    settings = {"model": args.model, "data": args.data, "max_train_samples": args.max_train_samples, **asdict(config)}
    settings.update(speedup_plan=plan, latency=latency)
    staging = staging_dir(out, settings, CONFIG_FILE, args.resume, args.overwrite)
    config = replace(config, latency_table=share_latency_table(staging, latency))
    run_stages(order_recipe(config, reading, control=args.control), args.model, args.data, staging)
    if not is_main_process():
        return {}
    rows = stage_rows(staging, config.stages())
    control = stage_rows(staging, stages_of(CONTROL, config.stage_steps))[0] if args.control else None
    time_stages(dense, [*rows, *([control] if control else [])], staging, SHAPES, args.threads)
    summary = _summary(args, data.task, config, rows, control, plan)
    summary["config"]["latency"] = latency
    write_json_atomic(staging / "summary.json", summary)
    write_report(staging)
    replace_dir(staging, out)
    _print_table(summary)
    return summary


LATENCY_FILE = "latency_table.json"


def latency_table(args: argparse.Namespace, dense, config_file: str) -> dict | None:
    """With ``--latency-aware``: the per-width latency table, measured once (a ``--resume`` reuses the
    one the interrupted run measured: timings differ from run to run)."""
    from dataclasses import asdict

    from prunekit.methods.speed import measure_latency_table

    if not args.latency_aware:
        return None
    saved = _saved(Path(args.out), config_file, "latency") if args.resume else None
    return saved if saved is not None else asdict(measure_latency_table(dense, SHAPES[0], args.round_to, args.threads))


def share_latency_table(staging: Path, latency: dict | None) -> str | None:
    """Write the latency table measured once into the run's folder; its path is every stage's
    ``latency_table`` (a resumed run allocates from the same timings). None without one."""
    from prunekit.io import write_json_atomic

    if latency is None:
        return None
    write_json_atomic(staging / LATENCY_FILE, latency)
    return str(staging.absolute() / LATENCY_FILE)


def time_stages(dense, rows: list, out: Path, shapes: tuple[tuple[int, int], ...], threads: int | None = None) -> None:
    """Time every stage's saved model against ``dense`` (interleaved, per shape); the latency ratios go
    into each row's ``extra["speedup"]`` as ``{"32x128": ratio}`` (> 1: faster than dense)."""
    from prunekit.methods.speed import measure_speedups
    from prunekit.models import load_model

    models = [load_model(str(Path(out) / row.folder))[0] for row in rows]
    ratios = measure_speedups(dense, models, shapes, threads)
    for index, row in enumerate(rows):
        row.extra["speedup"] = {f"{b}x{s}": per_shape[index] for (b, s), per_shape in zip(shapes, ratios)}


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
