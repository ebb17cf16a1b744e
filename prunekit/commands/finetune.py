"""``prunekit finetune``: the ``finetune`` stage from the command line (see ``prunekit.stages.train``):
full or LoRA fine-tuning, optionally pruning on a schedule, optionally with soft targets from a teacher;
saves the model and summary.json."""

from __future__ import annotations

import argparse

from prunekit.commands.common import (
    add_checkpoint_dir,
    add_output_arguments,
    preflight,
    print_result,
    run_training_stage,
)
from prunekit.options import add_config_arguments, config_from_args
from prunekit.stages.train import FinetuneStageConfig


def add_parser(commands) -> None:
    p = commands.add_parser("finetune", help="full fine-tune on a task; saves the model and summary.json")
    p.add_argument("--model", default="minilm", help="model folder, 'minilm' (packaged, default), or hub id")
    add_output_arguments(p)
    add_config_arguments(p, FinetuneStageConfig)
    add_checkpoint_dir(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> dict:
    preflight(args, {"--model": args.model, "--distill-from": args.distill_from})
    config = config_from_args(FinetuneStageConfig, args)
    summary = run_training_stage("finetune", args, config, args.model)
    if summary:
        footer = f"saved to {args.out}" + (" (LoRA adapter in its adapter/ folder)" if "lora" in summary else "")
        print_result(summary, footer)
    return summary
