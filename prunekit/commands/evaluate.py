"""``prunekit evaluate``: the ``evaluate`` stage from the command line: a model scored with its task's
official metric(s), or its perplexity on a text corpus."""

from __future__ import annotations

import argparse

from prunekit.commands.common import preflight, print_result, write_optional_json
from prunekit.options import add_config_arguments, config_from_args
from prunekit.stages import STAGES
from prunekit.stages.evaluate import EvaluateConfig


def add_parser(commands) -> None:
    p = commands.add_parser("evaluate", help="score a model with the task's official metric(s)")
    p.add_argument("--model", required=True, help="fine-tuned model folder")
    add_config_arguments(p, EvaluateConfig, skip=STAGES["evaluate"].omit)
    p.add_argument("--json", help="also write the result to this JSON file")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> dict:
    from prunekit.stages import STAGES, StageInputs, execute

    preflight(args, {"--model": args.model})
    summary = execute(STAGES["evaluate"], config_from_args(EvaluateConfig, args), StageInputs(args.model))
    write_optional_json(args.json, summary)
    print_result(summary)
    return summary
