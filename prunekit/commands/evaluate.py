"""``prunekit evaluate``: score a model with its task's official metric(s)."""

from __future__ import annotations

import argparse

from prunekit.commands.common import (
    add_data_arguments,
    load_data_for_model,
    preflight,
    print_result,
    stage_context,
    write_optional_json,
)
from prunekit.options import positive_int


def add_parser(commands) -> None:
    p = commands.add_parser("evaluate", help="score a model with the task's official metric(s)")
    p.add_argument("--model", required=True, help="fine-tuned model folder")
    add_data_arguments(p, with_train=False)
    p.add_argument(
        "--batch-size",
        dest="eval_batch_size",
        type=positive_int,
        help="examples per batch (default 64; text corpus: windows, default 4)",
    )
    p.add_argument("--json", help="also write the result to this JSON file")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> dict:
    from prunekit.models import load_model
    from prunekit.stages import STAGES, finish

    folder = preflight(args, {"--model": args.model})["--model"]
    data = load_data_for_model(args, folder, text=True)
    model, tokenizer = load_model(args.model, data.task if data.task.causal_lm else None, trained_head=True)
    context = stage_context(args, folder, model, tokenizer, data)
    summary = finish(context, STAGES["evaluate"].run(context, STAGES["evaluate"].config()))
    write_optional_json(args.json, summary)
    print_result(summary)
    return summary
