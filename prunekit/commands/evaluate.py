"""``prunekit evaluate``: score a model with its task's official metric(s)."""

from __future__ import annotations

import argparse

from prunekit.commands.common import (
    add_data_arguments,
    evaluation_fields,
    load_data_for_model,
    preflight,
    print_result,
    write_optional_json,
)
from prunekit.options import positive_int


def add_parser(commands) -> None:
    p = commands.add_parser("evaluate", help="score a model with the task's official metric(s)")
    p.add_argument("--model", required=True, help="fine-tuned model folder")
    add_data_arguments(p, with_train=False)
    p.add_argument(
        "--batch-size", type=positive_int, help="examples per batch (default 64; text corpus: windows, default 4)"
    )
    p.add_argument("--json", help="also write the result to this JSON file")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> dict:
    from prunekit.evaluation import make_summary, model_size
    from prunekit.models import load_model

    folder = preflight(args, {"--model": args.model})["--model"]
    data = load_data_for_model(args, folder, text=True)
    model, tokenizer = load_model(args.model, data.task if data.task.causal_lm else None, trained_head=True)
    evaluation = evaluation_fields(args, model, tokenizer, data, args.batch_size)
    summary = make_summary("evaluate", args.model, data.task.name, model_path=folder, **evaluation,
                           **model_size(model, folder))  # fmt: skip
    write_optional_json(args.json, summary)
    print_result(summary)
    return summary
