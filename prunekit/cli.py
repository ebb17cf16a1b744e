"""The ``prunekit`` command: finetune, evaluate, bench.

Every user error (PrunekitError) prints one line and exits with code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from prunekit.errors import ConfigError, PrunekitError

logger = logging.getLogger("prunekit")


# ---------------------------------------------------------------- arguments


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, found {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, found {text!r}")
    return value


def _add_data_arguments(parser: argparse.ArgumentParser, with_train: bool) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--data", help="GLUE task folder, CSV/TSV/JSONL file or folder, or hub dataset name")
    group.add_argument("--task", help="GLUE task name when the folder name does not say it (sst2, mrpc, ...)")
    if with_train:
        group.add_argument("--train", dest="train_file", help="training file (overrides the one in --data)")
    group.add_argument("--eval", dest="eval_file", help="evaluation file (overrides the one in --data)")
    group.add_argument("--text-columns", help="your own data: one or two text columns, 'a' or 'a,b'")
    group.add_argument("--label-column", help="your own data: the label column")
    group.add_argument("--no-header", action="store_true", help="files have no header; columns are 0-based indices")
    group.add_argument(
        "--regression",
        action="store_true",
        default=None,
        help="float labels: regression (detected when labels are non-integer numbers)",
    )
    group.add_argument("--max-eval-samples", type=_positive_int, help="evaluate on the first N examples only")
    group.add_argument("--max-length", type=_positive_int, default=128, help="tokens per example (default 128)")


def _add_pruning_target_arguments(parser) -> None:
    parser.add_argument(
        "--scope",
        choices=["global", "layer", "row"],
        help="rank weights over all targets (global, default), per matrix, or per output row",
    )
    parser.add_argument("--pattern", help="N:M semi-structured pattern, e.g. 2:4 (overrides --sparsity)")
    parser.add_argument("--targets", help="regex over module names to prune (default: attention + FFN projections)")
    parser.add_argument("--exclude", help="regex over module names to leave dense")


def _magnitude_config(args: argparse.Namespace, importance: str = "magnitude"):
    from prunekit.methods.magnitude import MagnitudeConfig

    scope = args.scope or ("row" if importance == "wanda" else "global")
    return MagnitudeConfig(
        sparsity=args.sparsity,
        scope=scope,
        pattern=args.pattern,
        targets=args.targets,
        exclude=args.exclude,
        importance=importance,
    )


def _data_kwargs(args: argparse.Namespace) -> dict:
    return dict(
        task=args.task,
        train_file=getattr(args, "train_file", None),
        eval_file=args.eval_file,
        text_columns=args.text_columns,
        label_column=args.label_column,
        no_header=args.no_header,
        regression=args.regression,
        max_eval_samples=args.max_eval_samples,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prunekit", description="Compress transformer models and measure it.")
    parser.add_argument("-v", "--verbose", action="store_true", help="show library logs")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("finetune", help="full fine-tune on a task; saves the model and summary.json")
    p.add_argument("--model", default="minilm", help="model folder, 'minilm' (packaged, default), or hub id")
    p.add_argument("--out", required=True, help="output folder (model + summary.json)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    _add_data_arguments(p, with_train=True)
    p.add_argument("--max-train-samples", type=_positive_int, help="train on a seeded random subset of N")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--batch-size", type=_positive_int, default=32, help="per process (default 32)")
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--warmup-ratio", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=42)
    group = p.add_argument_group("gradual pruning while fine-tuning (Zhu & Gupta cubic schedule)")
    group.add_argument("--prune", choices=["magnitude"], help="prune during fine-tuning")
    group.add_argument("--sparsity", type=float, default=0.5, help="final sparsity (default 0.5)")
    group.add_argument("--initial-sparsity", type=float, default=0.0)
    group.add_argument("--prune-start", type=int, default=0, help="optimizer step of the first pruning")
    group.add_argument("--prune-end", type=int, help="step reaching the final sparsity (default: 2/3 of training)")
    group.add_argument("--prune-every", type=int, default=10, help="steps between mask updates")
    _add_pruning_target_arguments(group)
    p.set_defaults(handler=run_finetune)

    p = commands.add_parser("prune", help="prune a model one-shot; saves it with its masks and summary.json")
    methods = p.add_subparsers(dest="method", required=True, metavar="METHOD")
    p = methods.add_parser("magnitude", help="unstructured pruning by |W| (or Wanda), global, per layer or N:M")
    p.add_argument("--model", required=True, help="model folder")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--sparsity", type=float, default=0.5, help="fraction of targeted weights to zero (default 0.5)")
    _add_pruning_target_arguments(p)
    p.add_argument(
        "--importance",
        choices=["magnitude", "wanda"],
        default="magnitude",
        help="wanda: |W|·‖X‖ with calibration batches from --data (default scope: row)",
    )
    p.add_argument("--calibration-samples", type=_positive_int, default=128, help="examples for wanda (default 128)")
    p.add_argument(
        "--save-format",
        choices=["dense", "sparse"],
        default="dense",
        help="dense: plain save_pretrained with zeros; sparse: bitmask + values",
    )
    _add_data_arguments(p, with_train=True)
    p.set_defaults(handler=run_prune_magnitude, data=None)

    p = commands.add_parser("evaluate", help="score a model with the task's official metric(s)")
    p.add_argument("--model", required=True, help="fine-tuned model folder")
    _add_data_arguments(p, with_train=False)
    p.add_argument("--batch-size", type=_positive_int, default=64)
    p.add_argument("--json", help="also write the result to this JSON file")
    p.set_defaults(handler=run_evaluate)

    p = commands.add_parser("bench", help="CPU latency and FLOPs, optionally as a ratio against --vs")
    p.add_argument("--model", required=True, help="model folder")
    p.add_argument("--vs", help="baseline model folder, timed interleaved in the same run")
    p.add_argument("--batch-size", type=_positive_int, default=32)
    p.add_argument("--seq-len", type=_positive_int, default=128)
    p.add_argument("--threads", type=_positive_int, default=2)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=_positive_int, default=20)
    p.add_argument("--json", help="also write the result to this JSON file")
    p.set_defaults(handler=run_bench)
    return parser


# ---------------------------------------------------------------- commands


def run_finetune(args: argparse.Namespace) -> dict:
    from transformers import set_seed

    from prunekit.data import load_task_data
    from prunekit.evaluation import evaluate_model, make_summary, model_size
    from prunekit.io import atomic_output_dir, check_output_dir, write_json_atomic
    from prunekit.models import load_model
    from prunekit.training import FinetuneConfig, finetune

    check_output_dir(args.out, args.overwrite)  # fail before any long work
    config = FinetuneConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        max_length=args.max_length,
        seed=args.seed,
        weight_decay=args.weight_decay,
        warmup_ratio=args.warmup_ratio,
    )
    data = load_task_data(args.data, max_train_samples=args.max_train_samples, seed=args.seed, **_data_kwargs(args))
    pruning = _magnitude_config(args) if args.prune else None
    set_seed(args.seed)  # before the classifier head is initialised
    model, tokenizer = load_model(args.model, data.task)
    callback = _sparsity_callback(args, config, len(data.train), pruning)
    with tempfile.TemporaryDirectory(prefix="prunekit-train-") as work_dir:
        trainer = finetune(model, tokenizer, data.train, data.task, config, work_dir, callbacks=[callback])
    if not trainer.is_world_process_zero():
        return {}
    masks = callback.masks
    metrics = evaluate_model(model, tokenizer, data.eval, data.task, max_length=config.max_length)
    state = trainer.state
    with atomic_output_dir(args.out, args.overwrite) as tmp:
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
            },
        )
        write_json_atomic(Path(tmp) / "summary.json", summary)
    _print_result(summary, f"saved to {args.out}")
    return summary


def _sparsity_callback(args, config, train_size: int, pruning):
    """Holds the masks saved with ``--model`` (if any) and, with ``--prune``, grows them on schedule."""
    import math

    from prunekit.models import resolve_model
    from prunekit.pruning.masks import MaskSet
    from prunekit.pruning.schedules import CubicSchedule
    from prunekit.training.callbacks import SparsityCallback

    folder = Path(resolve_model(args.model))
    masks = MaskSet.load(folder) if folder.is_dir() else None
    schedule = None
    if pruning is not None:
        steps = math.ceil(train_size / config.batch_size) * config.epochs  # single-process estimate
        end = args.prune_end if args.prune_end is not None else max(args.prune_start, int(steps * 2 / 3))
        schedule = CubicSchedule(pruning.sparsity, args.prune_start, end, args.prune_every, args.initial_sparsity)
    return SparsityCallback(masks, schedule, pruning)


def run_prune_magnitude(args: argparse.Namespace) -> dict:
    from prunekit.data import load_task_data
    from prunekit.evaluation import evaluate_model, make_summary, model_size
    from prunekit.io import atomic_output_dir, check_output_dir, write_json_atomic
    from prunekit.methods.magnitude import prune_magnitude
    from prunekit.models import load_config, load_model, resolve_model, task_label_names
    from prunekit.pruning.masks import MaskSet
    from prunekit.pruning.sparse_format import save_sparse

    check_output_dir(args.out, args.overwrite)
    pruning = _magnitude_config(args, args.importance)
    folder = resolve_model(args.model)
    data = None
    if args.data or args.eval_file:
        config = load_config(folder)
        data = load_task_data(
            args.data,
            label_names=task_label_names(config),
            need_train=args.importance == "wanda",
            max_train_samples=args.calibration_samples,
            **_data_kwargs(args),
        )
    elif args.importance == "wanda":
        raise ConfigError("--importance wanda needs calibration data: pass --data")
    model, tokenizer = load_model(args.model)
    calibration = None
    if args.importance == "wanda":
        calibration = (
            tokenizer(a, b, truncation=True, max_length=args.max_length, return_tensors="pt")
            for a, b in zip(data.train.text_a, data.train.text_b or [None] * len(data.train))
        )
    masks = prune_magnitude(model, pruning, calibration, current=MaskSet.load(folder))
    metrics = {}
    if data is not None:
        metrics = dict(
            metrics=evaluate_model(model, tokenizer, data.eval, data.task, max_length=args.max_length),
            main_metric=data.task.main_metric,
            eval_samples=len(data.eval),
        )
    with atomic_output_dir(args.out, args.overwrite) as tmp:
        if args.save_format == "sparse":
            save_sparse(model, masks, tmp)
        else:
            model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        masks.save(tmp)
        summary = make_summary(
            "prune",
            args.model,
            data.task.name if data else _task_of(folder),
            method="magnitude",
            importance=args.importance,
            scope=pruning.scope,
            pattern=pruning.pattern,
            **metrics,
            **model_size(model, tmp),
            **masks.report(),
        )
        write_json_atomic(Path(tmp) / "summary.json", summary)
    _print_result(summary, f"saved to {args.out}")
    return summary


def run_evaluate(args: argparse.Namespace) -> dict:
    from prunekit.data import load_task_data
    from prunekit.evaluation import evaluate_model, make_summary, model_size
    from prunekit.models import load_config, load_model, resolve_model, task_label_names

    folder = resolve_model(args.model)
    config = load_config(folder)  # cheap: validates the model and gives its labels before any data is read
    kwargs = _data_kwargs(args)
    if config.problem_type == "regression" and kwargs["regression"] is None:
        kwargs["regression"] = True
    data = load_task_data(args.data, need_train=False, label_names=task_label_names(config), **kwargs)
    if config.num_labels != data.task.num_labels:
        raise ConfigError(
            f"--model {args.model}: its head has {config.num_labels} output(s) but task {data.task.name!r} "
            f"needs {data.task.num_labels}; fine-tune it on this task first (prunekit finetune)"
        )
    model, tokenizer = load_model(args.model)
    metrics = evaluate_model(
        model, tokenizer, data.eval, data.task, max_length=args.max_length, batch_size=args.batch_size
    )
    summary = make_summary(
        "evaluate",
        args.model,
        data.task.name,
        metrics=metrics,
        main_metric=data.task.main_metric,
        **model_size(model, folder),
        eval_samples=len(data.eval),
    )
    _write_optional_json(args.json, summary)
    _print_result(summary)
    return summary


def run_bench(args: argparse.Namespace) -> dict:
    from prunekit.evaluation import count_flops, make_inputs, make_summary, measure_latency, model_size
    from prunekit.models import load_model, resolve_model

    names = [args.model] + ([args.vs] if args.vs else [])
    models = [load_model(name)[0] for name in names]
    inputs = [make_inputs(model, args.batch_size, args.seq_len) for model in models]
    flops = [count_flops(model, batch) for model, batch in zip(models, inputs)]
    stats = measure_latency(models, inputs, threads=args.threads, warmup=args.warmup, repeats=args.repeats)

    def describe(name: str, model, latency, model_flops) -> dict:
        folder = resolve_model(name)
        return dict(**model_size(model, folder), latency_ms=latency.as_dict(), flops=model_flops)

    summary = make_summary(
        "bench",
        args.model,
        _task_of(resolve_model(args.model)),
        **describe(args.model, models[0], stats[0], flops[0]),
        ratio_vs=None,
    )
    if args.vs:
        # ratio_vs: how many times faster --model is than --vs (> 1 means faster).
        summary["ratio_vs"] = round(stats[1].median / stats[0].median, 4)
        summary["vs"] = {"model": args.vs, **describe(args.vs, models[1], stats[1], flops[1])}
    _write_optional_json(args.json, summary)
    _print_result(summary)
    return summary


def _task_of(folder: str) -> str | None:
    """The task recorded in a model folder's summary.json, if it has one."""
    try:
        return json.loads((Path(folder) / "summary.json").read_text()).get("task")
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------- output


def _write_optional_json(path: str | None, summary: dict) -> None:
    from prunekit.io import write_json_atomic

    if path:
        write_json_atomic(path, summary)


def _print_result(summary: dict, footer: str | None = None) -> None:
    lines = [f"{summary['kind']}: {summary['model']}" + (f" on {summary['task']}" if summary.get("task") else "")]
    for name, value in summary.get("metrics", {}).items():
        marker = "  (main)" if name == summary.get("main_metric") else ""
        lines.append(f"  {name:<22} {value:.4f}{marker}")
    lines.append(f"  {'params_total':<22} {summary['params_total']:,}")
    lines.append(f"  {'params_nonzero':<22} {summary['params_nonzero']:,}")
    if "sparsity" in summary:
        lines.append(f"  {'sparsity':<22} {summary['sparsity']:.4f}")
    if summary.get("size_bytes") is not None:
        lines.append(f"  {'size_bytes':<22} {summary['size_bytes']:,}")
    if "latency_ms" in summary:
        lat = summary["latency_ms"]
        lines.append(
            f"  {'latency_ms':<22} median {lat['median']:.2f} (min {lat['min']:.2f}, max {lat['max']:.2f}) "
            f"batch {lat['batch_size']} x seq {lat['seq_len']}, {lat['threads']} threads"
        )
        lines.append(f"  {'flops':<22} {summary['flops']:.3e}")
    if summary.get("ratio_vs") is not None:
        vs = summary["vs"]
        lines.append(f"  vs {vs['model']}: median {vs['latency_ms']['median']:.2f} ms, flops {vs['flops']:.3e}")
        lines.append(f"  {'ratio_vs (speed-up)':<22} {summary['ratio_vs']:.3f}x")
    if footer:
        lines.append(footer)
    print("\n".join(lines))


def _configure_logging(verbose: bool) -> None:
    level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not verbose:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()  # per-load weight bars; the Trainer's own progress bar stays
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    try:
        args.handler(args)
    except PrunekitError as err:
        command = " ".join(filter(None, (args.command, getattr(args, "method", None))))
        print(f"prunekit {command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("prunekit: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
