"""``prunekit merge``: the ``merge`` stage from the command line (see ``prunekit.stages.merge``): a LoRA
adapter folded into its base model's weights, the base's masks kept; with ``--data`` the metric is
reported before and after the merge (they must agree)."""

from __future__ import annotations

import argparse

from prunekit.commands.common import add_output_arguments, preflight, print_result
from prunekit.options import add_config_arguments, config_from_args
from prunekit.stages import STAGES
from prunekit.stages.merge import MergeStageConfig


def add_parser(commands) -> None:
    p = commands.add_parser("merge", help="merge a LoRA adapter into its base model (masks of the base kept)")
    p.add_argument("--model", required=True, help="the base model the adapter was trained on (folder or alias)")
    add_output_arguments(p)
    add_config_arguments(p, MergeStageConfig, skip=STAGES["merge"].omit)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> dict:
    from prunekit.stages import STAGES, StageInputs, execute

    preflight(args, {"--model": args.model})
    config = config_from_args(MergeStageConfig, args)
    summary = execute(STAGES["merge"], config, StageInputs(args.model, out=args.out, overwrite=args.overwrite))
    print_result(summary, f"saved to {args.out}")
    return summary
