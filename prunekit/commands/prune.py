"""``prunekit prune METHOD``: one-shot pruning; saves the model and summary.json.

``magnitude`` zeroes weights and saves the masks; ``structured`` removes heads, FFN neurons, layers
and vocabulary entries physically (see ``prunekit.methods.structured``)."""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from pathlib import Path

from prunekit.commands.common import (
    add_data_arguments,
    add_output_arguments,
    evaluation_fields,
    load_data_for_model,
    preflight,
    print_result,
    task_of,
)
from prunekit.errors import ConfigError
from prunekit.methods.magnitude import MagnitudeConfig
from prunekit.methods.structured import StructuredConfig
from prunekit.options import add_config_arguments, config_from_args, positive_int, seed


def add_parser(commands) -> None:
    p = commands.add_parser("prune", help="prune a model one-shot; saves it with its masks and summary.json")
    methods = p.add_subparsers(dest="method", required=True, metavar="METHOD")
    p = methods.add_parser(
        "magnitude", help="unstructured pruning by |W|, Wanda or SparseGPT: global, per layer, per row or N:M"
    )
    p.add_argument("--model", required=True, help="model folder, or minilm / smollm2")
    add_output_arguments(p)
    add_config_arguments(p, MagnitudeConfig)
    add_calibration_arguments(p, 128, "calibration examples (text corpus: windows) for wanda / sparsegpt (default 128)")
    p.add_argument(
        "--save-format",
        choices=["dense", "sparse"],
        default="dense",
        help="dense: plain save_pretrained with zeros; sparse: bitmask + values",
    )
    add_data_arguments(p, with_train=True)
    p.set_defaults(handler=run_magnitude)
    add_structured_parser(methods)


CALIBRATION_EXAMPLES, CALIBRATION_WINDOWS = 512, 128  # prune structured's defaults (measured: bench/peer_setting.py)


def add_calibration_arguments(parser, samples: int | None, help_text: str) -> None:
    parser.add_argument("--calibration-samples", type=positive_int, default=samples, help=help_text)
    parser.add_argument(
        "--calibration-length",
        type=positive_int,
        default=512,
        help="text corpus: tokens per calibration window, drawn at random offsets of the training text (default 512)",
    )
    parser.add_argument(
        "--calibration-seed",
        type=seed,
        default=42,
        help="seed of the random draw of calibration examples from the training split (default 42)",
    )


def _calibration(args: argparse.Namespace, text: bool = False) -> dict:
    """How the calibration examples were drawn, for summary.json."""
    drawn = {"samples": args.calibration_samples, "seed": args.calibration_seed}
    return {"calibration": {**drawn, "length": args.calibration_length} if text else drawn}


def run_magnitude(args: argparse.Namespace) -> dict:
    from prunekit.data.text import calibration_blocks
    from prunekit.evaluation import make_summary, model_size, peak_memory_mb
    from prunekit.io import atomic_output_dir, write_json_atomic
    from prunekit.methods.magnitude import prune_magnitude
    from prunekit.models import load_model
    from prunekit.pruning.masks import MaskSet
    from prunekit.pruning.sparse_format import save_sparse

    folder = preflight(args, {"--model": args.model})["--model"]
    pruning = config_from_args(MagnitudeConfig, args)
    calibrated = args.importance != "magnitude"
    if calibrated and not (args.data or args.train_file):
        raise ConfigError(f"--importance {args.importance} needs calibration data: pass --data")
    data = None
    if args.data or args.eval_file:
        data = load_data_for_model(args, folder, need_train=calibrated, text=True,
                                   max_train_samples=args.calibration_samples, seed=args.calibration_seed)  # fmt: skip
    text = data is not None and data.task.causal_lm
    model, tokenizer = load_model(args.model, data.task if text else None)
    calibration = None
    if calibrated and text:
        calibration = calibration_blocks(
            tokenizer, data.train, args.calibration_samples, args.calibration_length, args.calibration_seed
        )
    elif calibrated:  # one example per batch: no padding tokens in the activation statistics
        pairs = zip(data.train.text_a, data.train.text_b or [None] * len(data.train))
        calibration = (
            tokenizer(a, b, truncation=True, max_length=args.max_length, return_tensors="pt") for a, b in pairs
        )
    started = time.perf_counter()
    masks = prune_magnitude(model, pruning, calibration, current=MaskSet.load(folder, model))
    seconds, peak = round(time.perf_counter() - started, 1), peak_memory_mb()  # before evaluation adds its own
    evaluation = evaluation_fields(args, model, tokenizer, data)
    with atomic_output_dir(args.out, args.overwrite) as tmp:
        if args.save_format == "sparse":
            save_sparse(model, masks, tmp)  # its bitmasks are the masks: no separate masks file
        else:
            model.save_pretrained(tmp)
            masks.save(tmp)
        tokenizer.save_pretrained(tmp)
        summary = make_summary(
            "prune",
            args.model,
            data.task.name if data else task_of(folder),
            model_path=folder,
            method="magnitude",
            importance=args.importance,
            scope=pruning.scope,
            pattern=pruning.pattern,
            **(_calibration(args, text) if calibrated else {}),
            **(
                {"block_size": pruning.block_size, "dampening": pruning.dampening}
                if args.importance == "sparsegpt"
                else {}
            ),
            **evaluation,
            **model_size(model, tmp),
            **masks.report(),
            prune_seconds=seconds,
            peak_rss_mb=peak,
        )
        write_json_atomic(Path(tmp) / "summary.json", summary)
    print_result(summary, f"saved to {args.out}")
    return summary


def add_structured_parser(methods) -> None:
    p = methods.add_parser(
        "structured", help="remove attention heads, FFN neurons, layers and unused vocabulary physically"
    )
    p.add_argument("--model", required=True, help="model folder (fine-tuned on the task)")
    add_output_arguments(p)
    add_config_arguments(p, StructuredConfig)
    p.add_argument(
        "--vocab-from", help="keep only tokens used by this corpus: a dataset (its train split) or .txt file"
    )
    add_calibration_arguments(
        p,
        None,
        f"training examples for importance (default {CALIBRATION_EXAMPLES}; text: {CALIBRATION_WINDOWS} windows)",
    )
    p.add_argument("--calibration-batch-size", type=positive_int, default=32)
    add_data_arguments(p, with_train=True)
    p.set_defaults(handler=run_structured)


def _corpus_texts(source: str, encoding: str) -> list:
    """Sentences (or sentence pairs) of ``source``: a .txt file (a sentence per line) or a dataset."""
    from prunekit.data import load_task_data
    from prunekit.errors import DataError

    path = Path(source)
    if path.suffix == ".txt":
        try:
            return [line for line in path.read_text(encoding=encoding).splitlines() if line.strip()]
        except OSError as err:
            raise DataError(f"--vocab-from {source}: cannot read ({err.strerror})") from None
        except UnicodeDecodeError as err:
            raise DataError(
                f"--vocab-from {source}: not valid {encoding} text ({err.reason}); pass --encoding"
            ) from None
    train = load_task_data(source, need_eval=False, encoding=encoding).train
    return list(zip(train.text_a, train.text_b)) if train.text_b else list(train.text_a)


def _calibration_batches(data, tokenizer, args: argparse.Namespace) -> list[dict]:
    """Labelled batches that score units: the task's examples, or windows of a text corpus with their
    next-token labels (the language-modelling loss)."""
    from prunekit.data import encode_batches
    from prunekit.data.text import calibration_batches

    if data is None or data.train is None:
        return []
    size = args.calibration_batch_size
    if data.task.causal_lm:
        return calibration_batches(
            tokenizer, data.train, args.calibration_samples, args.calibration_length, args.calibration_seed, size
        )
    return encode_batches(data.train, tokenizer, args.max_length, data.task.is_regression, size)


def run_structured(args: argparse.Namespace) -> dict:
    from prunekit.data.text import is_text_corpus
    from prunekit.evaluation import make_summary, model_size
    from prunekit.importance.structured import NEEDS_DATA
    from prunekit.io import atomic_output_dir, write_json_atomic
    from prunekit.methods.speed import measure_latency_table
    from prunekit.methods.structured import prune_structured
    from prunekit.models import count_parameters, load_config, load_model
    from prunekit.pruned_models import save_pruned
    from prunekit.pruning.vocabulary import corpus_token_ids, prune_vocabulary, vocabulary_report

    folder = preflight(args, {"--model": args.model})["--model"]
    config = config_from_args(StructuredConfig, args, flops_seq_len=args.max_length)
    config.validate(load_config(folder).num_hidden_layers)  # bad targets fail before any data is read
    prunes_units = config.prunes_units
    if config.latency_aware and not prunes_units:
        raise ConfigError("--latency-aware allocates heads and neurons: pass --heads, --ffn or a budget")
    needs_data = (prunes_units and config.importance in NEEDS_DATA) or config.layers is not None
    if needs_data and not (args.data or args.train_file):
        raise ConfigError(f"--importance {config.importance} / --layers need calibration data: pass --data")
    text = is_text_corpus(args.data, args.train_file, args.eval_file)
    if args.calibration_samples is None:
        args.calibration_samples = CALIBRATION_WINDOWS if text else CALIBRATION_EXAMPLES
    data = None
    if args.data or args.eval_file or args.train_file:
        data = load_data_for_model(args, folder, need_train=needs_data, text=True,
                                   max_train_samples=args.calibration_samples, seed=args.calibration_seed)  # fmt: skip
    model, tokenizer = load_model(args.model, data.task if text and data else None)
    params_before, _ = count_parameters(model)
    vocabulary = {}
    if args.vocab_from:
        vocab_before = model.get_input_embeddings().num_embeddings
        tokenizer, kept = prune_vocabulary(
            model, tokenizer, corpus_token_ids(tokenizer, _corpus_texts(args.vocab_from, args.encoding))
        )
        vocabulary = vocabulary_report(vocab_before, kept, model.get_input_embeddings().embedding_dim)
    if config.latency_aware:
        config.latency = measure_latency_table(model, (32, args.max_length), config.round_to)
    result = prune_structured(model, config, _calibration_batches(data, tokenizer, args) if needs_data else [])
    evaluation = evaluation_fields(args, model, tokenizer, data)
    with atomic_output_dir(args.out, args.overwrite) as tmp:
        save_format = save_pruned(model, tmp)
        tokenizer.save_pretrained(tmp)
        summary = make_summary(
            "prune",
            args.model,
            data.task.name if data else task_of(folder),
            model_path=folder,
            method="structured",
            importance=config.importance if prunes_units else None,
            layer_importance=config.layer_importance if config.layers is not None else None,
            scope=config.scope,
            save_format=save_format,
            **(_calibration(args, text) if needs_data else {}),
            **({"latency_table": asdict(config.latency)} if config.latency else {}),
            **evaluation,
            **model_size(model, tmp),
            params_before=params_before,
            **vocabulary,
            **result,
        )
        write_json_atomic(Path(tmp) / "summary.json", summary)
    print_result(summary, f"saved to {args.out} ({save_format} format)")
    return summary
