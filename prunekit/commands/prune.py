"""``prunekit prune METHOD``: the one-shot pruning stages from the command line (see
``prunekit.stages.prune``); saves the model and summary.json.

``magnitude`` zeroes weights and saves the masks; ``structured`` removes heads, FFN neurons, layers
and vocabulary entries physically."""

from __future__ import annotations

import argparse

from prunekit.commands.common import add_output_arguments, preflight, print_result
from prunekit.errors import ConfigError
from prunekit.options import add_config_arguments, config_from_args
from prunekit.stages import STAGES
from prunekit.stages.prune import PruneMagnitudeConfig, PruneStructuredConfig


def add_parser(commands) -> None:
    p = commands.add_parser("prune", help="prune a model one-shot; saves it with its masks and summary.json")
    methods = p.add_subparsers(dest="method", required=True, metavar="METHOD")
    p = methods.add_parser(
        "magnitude", help="unstructured pruning by |W|, Wanda or SparseGPT: global, per layer, per row or N:M"
    )
    p.add_argument("--model", required=True, help="model folder, or minilm / smollm2")
    add_output_arguments(p)
    p.add_argument("--resume", action="store_true", help="--stream: continue a killed run after its last layer")
    add_config_arguments(p, PruneMagnitudeConfig, skip=STAGES["prune-magnitude"].omit)
    p.set_defaults(handler=run_magnitude)

    p = methods.add_parser(
        "structured", help="remove attention heads, FFN neurons, layers and unused vocabulary physically"
    )
    p.add_argument("--model", required=True, help="model folder (fine-tuned on the task)")
    add_output_arguments(p)
    add_config_arguments(p, PruneStructuredConfig)
    p.set_defaults(handler=run_structured)


def _prune(args: argparse.Namespace, name: str, config) -> dict:
    from prunekit.stages import STAGES, StageInputs, execute

    inputs = StageInputs(args.model, out=args.out, resume=getattr(args, "resume", False), overwrite=args.overwrite)
    summary = execute(STAGES[name], config, inputs)
    shown = f" ({summary['save_format']} format)" if "save_format" in summary else ""
    print_result(summary, f"saved to {args.out}{shown}")
    return summary


def run_magnitude(args: argparse.Namespace) -> dict:
    config = config_from_args(PruneMagnitudeConfig, args)
    if args.resume and not config.stream:
        raise ConfigError("--resume: only a --stream run keeps progress to resume")
    preflight(args, {"--model": args.model})
    return _prune(args, "prune-magnitude", config)


def run_structured(args: argparse.Namespace) -> dict:
    from prunekit.models import load_config

    folder = preflight(args, {"--model": args.model})["--model"]
    config = config_from_args(PruneStructuredConfig, args)
    config.pruning.validate(load_config(folder).num_hidden_layers)  # bad targets fail before any data is read
    return _prune(args, "prune-structured", config)
