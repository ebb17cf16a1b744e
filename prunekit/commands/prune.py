"""``prunekit prune METHOD``: one-shot pruning; saves the model with its masks and summary.json."""

from __future__ import annotations

import argparse
from pathlib import Path

from prunekit.commands.common import (
    add_data_arguments,
    add_output_arguments,
    add_pruning_target_arguments,
    load_data_for_model,
    magnitude_config,
    positive_int,
    print_result,
    task_of,
)
from prunekit.errors import ConfigError


def add_parser(commands) -> None:
    p = commands.add_parser("prune", help="prune a model one-shot; saves it with its masks and summary.json")
    methods = p.add_subparsers(dest="method", required=True, metavar="METHOD")
    p = methods.add_parser("magnitude", help="unstructured pruning by |W| (or Wanda), global, per layer or N:M")
    p.add_argument("--model", required=True, help="model folder")
    add_output_arguments(p)
    p.add_argument("--sparsity", type=float, default=0.5, help="fraction of targeted weights to zero (default 0.5)")
    add_pruning_target_arguments(p)
    p.add_argument(
        "--importance",
        choices=["magnitude", "wanda"],
        default="magnitude",
        help="wanda: |W|·‖X‖ with calibration batches from --data (default scope: row)",
    )
    p.add_argument("--calibration-samples", type=positive_int, default=128, help="examples for wanda (default 128)")
    p.add_argument(
        "--save-format",
        choices=["dense", "sparse"],
        default="dense",
        help="dense: plain save_pretrained with zeros; sparse: bitmask + values",
    )
    add_data_arguments(p, with_train=True)
    p.set_defaults(handler=run_magnitude)


def run_magnitude(args: argparse.Namespace) -> dict:
    from prunekit.evaluation import evaluate_model, make_summary, model_size
    from prunekit.io import atomic_output_dir, check_output_dir, write_json_atomic
    from prunekit.methods.magnitude import prune_magnitude
    from prunekit.models import load_model, resolve_model
    from prunekit.pruning.masks import MaskSet
    from prunekit.pruning.sparse_format import save_sparse

    check_output_dir(args.out, args.overwrite)
    pruning = magnitude_config(args, args.importance)
    folder = resolve_model(args.model)
    wanda = args.importance == "wanda"
    if wanda and not (args.data or args.train_file):
        raise ConfigError("--importance wanda needs calibration data: pass --data")
    data = None
    if args.data or args.eval_file:
        data = load_data_for_model(args, folder, need_train=wanda, max_train_samples=args.calibration_samples)
    model, tokenizer = load_model(args.model)
    calibration = None
    if wanda:  # one example per batch: no padding tokens in the activation statistics
        pairs = zip(data.train.text_a, data.train.text_b or [None] * len(data.train))
        calibration = (
            tokenizer(a, b, truncation=True, max_length=args.max_length, return_tensors="pt") for a, b in pairs
        )
    masks = prune_magnitude(model, pruning, calibration, current=MaskSet.load(folder))
    evaluation = {}
    if data is not None:
        evaluation = dict(
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
            data.task.name if data else task_of(folder),
            method="magnitude",
            importance=args.importance,
            scope=pruning.scope,
            pattern=pruning.pattern,
            **evaluation,
            **model_size(model, tmp),
            **masks.report(),
        )
        write_json_atomic(Path(tmp) / "summary.json", summary)
    print_result(summary, f"saved to {args.out}")
    return summary
