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
    p.set_defaults(handler=run_finetune)

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
    set_seed(args.seed)  # before the classifier head is initialised
    model, tokenizer = load_model(args.model, data.task)
    with tempfile.TemporaryDirectory(prefix="prunekit-train-") as work_dir:
        trainer = finetune(model, tokenizer, data.train, data.task, config, work_dir)
    if not trainer.is_world_process_zero():
        return {}
    metrics = evaluate_model(model, tokenizer, data.eval, data.task, max_length=config.max_length)
    state = trainer.state
    with atomic_output_dir(args.out, args.overwrite) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        summary = make_summary(
            "finetune",
            args.model,
            data.task.name,
            metrics=metrics,
            main_metric=data.task.main_metric,
            **model_size(model, tmp),
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
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    try:
        args.handler(args)
    except PrunekitError as err:
        print(f"prunekit {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("prunekit: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
