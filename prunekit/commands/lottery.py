"""``prunekit lottery``: the ``lottery`` stage from the command line (see ``prunekit.stages.lottery``):
iterative magnitude pruning with rewinding, controls, resumable rounds."""

from __future__ import annotations

import argparse
from pathlib import Path

from prunekit.commands.common import add_output_arguments, preflight
from prunekit.options import add_config_arguments, config_from_args
from prunekit.stages import STAGES
from prunekit.stages.lottery import CONFIG_FILE, LotteryStageConfig


def add_parser(commands) -> None:
    p = commands.add_parser("lottery", help="lottery-ticket search: prune, rewind, retrain for R rounds, with controls")
    p.add_argument("--model", default="minilm", help="model folder, 'minilm' (packaged, default), or hub id")
    add_output_arguments(p)
    p.add_argument("--resume", action="store_true", help="continue a killed run in --out after its last round")
    add_config_arguments(p, LotteryStageConfig, skip=STAGES["lottery"].omit)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> dict:
    from prunekit.stages import STAGES, StageInputs, execute

    config = config_from_args(LotteryStageConfig, args)
    config.search()  # settings that contradict each other fail first
    own_result = args.resume and (Path(args.out) / CONFIG_FILE).is_file()  # --resume may replace its own --out
    preflight(args, {"--model": args.model}, replaces_out=own_result)
    inputs = StageInputs(args.model, out=args.out, resume=args.resume, overwrite=args.overwrite)
    summary = execute(STAGES["lottery"], config, inputs)
    _print_table(summary)
    return summary


def _print_table(summary: dict) -> None:
    metric = summary["main_metric"]
    print(f"lottery: {summary['model']} on {summary['task']} ({metric}; dense {summary['dense']:.4f})")
    print(f"  {'round':>5} {'sparsity':>9} {'ticket':>8} {'random':>8} {'one-shot':>9}")

    def show(value: float | None) -> str:
        return f"{value:.4f}" if value is not None else "—"

    for r in summary["rounds"]:
        print(
            f"  {r['round']:>5} {r['sparsity']:>9.4f} {show(r['ticket']):>8} "
            f"{show(r['random_mask']):>8} {show(r['one_shot']):>9}"
        )
    ticket = summary["winning_ticket"]
    if ticket:
        print(f"winning ticket: round {ticket['round']} at {ticket['sparsity']:.1%} sparsity -> {ticket['path']}")
    else:
        print("no round within the tolerance of dense: no ticket exported")
