"""``prunekit prune METHOD``: the one-shot pruning stages from the command line (see
``prunekit.stages.prune``); saves the model and summary.json.

``magnitude`` zeroes weights and saves the masks; ``structured`` removes heads, FFN neurons, layers
and vocabulary entries physically."""

from __future__ import annotations

import argparse

from prunekit.commands.common import (
    add_data_arguments,
    add_output_arguments,
    load_data_for_model,
    preflight,
    print_result,
    stage_context,
)
from prunekit.errors import ConfigError
from prunekit.options import add_config_arguments, config_from_args
from prunekit.stages.prune import PruneMagnitudeConfig, PruneStructuredConfig


def add_parser(commands) -> None:
    p = commands.add_parser("prune", help="prune a model one-shot; saves it with its masks and summary.json")
    methods = p.add_subparsers(dest="method", required=True, metavar="METHOD")
    p = methods.add_parser(
        "magnitude", help="unstructured pruning by |W|, Wanda or SparseGPT: global, per layer, per row or N:M"
    )
    p.add_argument("--model", required=True, help="model folder, or minilm / smollm2")
    add_output_arguments(p)
    add_config_arguments(p, PruneMagnitudeConfig, skip=("calibration.batch_size",))  # one example a batch
    add_data_arguments(p, with_train=True)
    p.set_defaults(handler=run_magnitude)

    p = methods.add_parser(
        "structured", help="remove attention heads, FFN neurons, layers and unused vocabulary physically"
    )
    p.add_argument("--model", required=True, help="model folder (fine-tuned on the task)")
    add_output_arguments(p)
    add_config_arguments(p, PruneStructuredConfig)
    add_data_arguments(p, with_train=True)
    p.set_defaults(handler=run_structured)


def _prune(args: argparse.Namespace, folder: str, config, needs_data: bool, what: str) -> dict:
    """Load what the stage works on, run it, save the result (the tail every stage shares)."""
    from prunekit.data.text import is_text_corpus
    from prunekit.models import load_model
    from prunekit.pruning.masks import MaskSet
    from prunekit.stages import STAGES, finish

    if needs_data and not (args.data or args.train_file):
        raise ConfigError(f"{what} needs calibration data: pass --data")
    draw = config.draw(is_text_corpus(args.data, args.train_file, args.eval_file))
    data = None
    if args.data or args.eval_file or args.train_file:
        data = load_data_for_model(args, folder, need_train=needs_data, text=True, max_train_samples=draw.samples,
                                   seed=draw.seed)  # fmt: skip
    model, tokenizer = load_model(args.model, data.task if data is not None and data.task.causal_lm else None)
    masks = MaskSet.load(folder, model) if args.method == "magnitude" else None  # a new mask only prunes more
    context = stage_context(args, folder, model, tokenizer, data, masks=masks)
    result = STAGES[f"prune-{args.method}"].run(context, config)
    summary = finish(context, result, args.out, args.overwrite)
    shown = f" ({summary['save_format']} format)" if "save_format" in summary else ""
    print_result(summary, f"saved to {args.out}{shown}")
    return summary


def run_magnitude(args: argparse.Namespace) -> dict:
    folder = preflight(args, {"--model": args.model})["--model"]
    config = config_from_args(PruneMagnitudeConfig, args)
    return _prune(args, folder, config, config.needs_data, f"--importance {config.pruning.importance}")


def run_structured(args: argparse.Namespace) -> dict:
    from prunekit.models import load_config

    folder = preflight(args, {"--model": args.model})["--model"]
    config = config_from_args(PruneStructuredConfig, args)
    config.pruning.validate(load_config(folder).num_hidden_layers)  # bad targets fail before any data is read
    return _prune(args, folder, config, config.needs_data, f"--importance {config.pruning.importance} / --layers")
