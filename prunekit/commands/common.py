"""Arguments and output shared by the commands."""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

from prunekit.errors import ConfigError
from prunekit.options import add_config_arguments, config_from_args, positive_int


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder (model + summary.json)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


DEFAULT_MAX_LENGTH, LM_MAX_LENGTH = 128, 512


def add_data_arguments(parser: argparse.ArgumentParser, with_train: bool) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--data", help="GLUE task folder, CSV/TSV/JSONL file or folder, or hub dataset name")
    group.add_argument("--task", help="GLUE task name when the folder name does not say it (sst2, mrpc, ...)")
    if with_train:
        group.add_argument("--train", dest="train_file", help="training file (overrides the one in --data)")
    group.add_argument("--eval", dest="eval_file", help="evaluation file (overrides the one in --data)")
    group.add_argument("--text-columns", help="your own data: one or two text columns, 'a' or 'a,b'")
    group.add_argument("--label-column", help="your own data: the label column")
    group.add_argument("--no-header", action="store_true", help="files have no header; columns are 0-based indices")
    group.add_argument(
        "--regression",
        action="store_true",
        default=None,
        help="float labels: regression (detected when labels are non-integer numbers)",
    )
    group.add_argument("--max-eval-samples", type=positive_int, help="evaluate on the first N examples only")
    group.add_argument(
        "--max-length",
        type=positive_int,
        help=f"tokens per example (default {DEFAULT_MAX_LENGTH}); for a text corpus, tokens per perplexity "
        f"window (default {LM_MAX_LENGTH})",
    )
    group.add_argument(
        "--stride",
        type=positive_int,
        help="text corpus: a perplexity window starts every N tokens (default: --max-length, no overlap)",
    )
    group.add_argument(
        "--max-eval-tokens", type=positive_int, help="text corpus: score the first N tokens of the dev text only"
    )
    group.add_argument("--encoding", default="utf-8", help="text encoding of the data files (default utf-8)")
    group.add_argument(
        "--skip-bad-rows",
        action="store_true",
        help="skip (and count) malformed rows instead of stopping at the first one",
    )


def add_training_arguments(parser: argparse.ArgumentParser, with_max_steps: bool = True) -> None:
    """``--max-train-samples`` and ``FinetuneConfig``'s flags (``with_max_steps``: also ``--max-steps`` and
    the checkpoint flags)."""
    from prunekit.training.config import FinetuneConfig

    group = parser.add_argument_group("training")
    group.add_argument("--max-train-samples", type=positive_int, help="train on a seeded random subset of N")
    add_config_arguments(group, FinetuneConfig, skip=() if with_max_steps else ("max_steps", "checkpoint_every"))
    if with_max_steps:
        group.add_argument("--checkpoint-dir", help="folder for --checkpoint-every's checkpoints")


def add_lora_arguments(parser) -> None:
    from prunekit.training.config import LoraOptions

    group = parser.add_argument_group("LoRA (PEFT): train low-rank adapters on a frozen base, then merge them")
    add_config_arguments(group, LoraOptions)


def lora_settings(args: argparse.Namespace, model):
    """The ``LoraConfig`` the ``--lora*`` flags ask for, or None without ``--lora``."""
    from prunekit.training.config import LoraOptions

    return config_from_args(LoraOptions, args).peft_config(model)


def preflight(
    args: argparse.Namespace,
    models: dict[str, str | None],
    length_flag: str = "--max-length",
    length_label: str | None = None,
    replaces_out: bool = False,
) -> dict[str, str]:
    """Every check that needs no real work, before any: the models exist (errors name their flags),
    inputs fit the models' positions, ``--out`` harms no input and is writable (a killed run's leftovers
    beside it are recovered first), ``--json`` is writable. ``replaces_out``: an existing ``--out`` is
    the command's own earlier result (``--resume``), replaced without ``--overwrite``. ``length_label``
    names the length in messages when it is not the flag itself. Returns ``{flag: resolved model folder}``.
    """
    from prunekit.data.text import is_text_corpus
    from prunekit.io import check_json_path, check_output_dir, recover_output_dir
    from prunekit.models import check_max_length, load_config, max_positions, resolve_model

    folders = {flag: resolve_model(name, flag) for flag, name in models.items() if name is not None}
    configs = {flag: load_config(folder, flag) for flag, folder in folders.items()}
    if length_flag == "--max-length" and args.max_length is None:
        # the default: up to 512 tokens a perplexity window on text, 128 an example, within every model's positions
        text = is_text_corpus(args.data, getattr(args, "train_file", None), args.eval_file)
        limits = [max_positions(config) for config in configs.values()]
        default = LM_MAX_LENGTH if text else DEFAULT_MAX_LENGTH
        args.max_length = min([default, *(limit for limit in limits if limit is not None)])
    length = getattr(args, length_flag[2:].replace("-", "_"))
    for flag, config in configs.items():
        check_max_length(config, length, length_label or length_flag, f" of {flag} {models[flag]}")
    inputs = [*folders.items(), *((flag, getattr(args, key, None)) for flag, key in INPUT_FLAGS.items())]
    if getattr(args, "out", None) is not None:
        recover_output_dir(args.out)
        check_output_dir(args.out, args.overwrite or replaces_out, inputs)
    outputs = [("--out", getattr(args, key, None)) for key in ("out", "out_file")]
    check_json_path(getattr(args, "json", None), inputs=[*inputs, *outputs])
    return folders


# inputs besides models that --out must leave alone
INPUT_FLAGS = {
    "--data": "data",
    "--train": "train_file",
    "--eval": "eval_file",
    "--vocab-from": "vocab_from",
    "--adapter": "adapter",
}


def finetune_config(args: argparse.Namespace, train_size: int, max_steps: int | None = None):
    """The training flags as a ``FinetuneConfig``, ``auto`` resolved for ``train_size`` examples."""
    from prunekit.training.config import FinetuneConfig

    checkpoint_every = getattr(args, "checkpoint_every", None)
    if checkpoint_every and not args.checkpoint_dir:
        raise ConfigError("--checkpoint-every: also pass --checkpoint-dir (where the checkpoints go)")
    if checkpoint_every and getattr(args, "prune", None):
        raise ConfigError(
            f"--checkpoint-every with --prune {args.prune}: the pruning schedule's state is not in a Trainer "
            "checkpoint; leave --checkpoint-every out (a killed run starts the stage again)"
        )
    overrides = {"max_length": args.max_length} | ({} if max_steps is None else {"max_steps": max_steps})
    return config_from_args(FinetuneConfig, args, **overrides).resolved(train_size)


@contextlib.contextmanager
def training_dir(args: argparse.Namespace, kind: str) -> Iterator[str]:
    """The Trainer's work folder: ``--checkpoint-dir`` when checkpoints are kept (it stays), else a
    scratch folder removed at the end."""
    from prunekit.io import work_dir

    if getattr(args, "checkpoint_every", None):
        Path(args.checkpoint_dir).mkdir(parents=True, exist_ok=True)
        yield args.checkpoint_dir
        return
    with work_dir(kind) as folder:
        yield folder


def data_kwargs(args: argparse.Namespace) -> dict:
    """The data flags as ``load_task_data`` keyword arguments."""
    return dict(
        task=args.task,
        train_file=getattr(args, "train_file", None),
        eval_file=args.eval_file,
        text_columns=args.text_columns,
        label_column=args.label_column,
        no_header=args.no_header,
        regression=args.regression,
        max_eval_samples=args.max_eval_samples,
        encoding=args.encoding,
        skip_bad_rows=args.skip_bad_rows,
    )


def load_data_for_model(
    args: argparse.Namespace,
    folder: str,
    need_train: bool = False,
    text: bool = False,
    flag: str = "--model",
    **extra,
):
    """The data flags read for the model in ``folder`` (``stages.inputs.load_data``): labelled data in
    its label order, or with ``text`` (the command handles language modelling) a text corpus for a
    causal LM. ``flag`` names the model in messages."""
    from prunekit.models import load_config
    from prunekit.stages.inputs import load_data

    config = load_config(folder)  # cheap: validates the model before any data is read
    where = f"{flag} {getattr(args, flag[2:].replace('-', '_'))}"
    options = {**data_kwargs(args), **extra}
    return load_data(config, args.data, where=where, need_train=need_train, text=text, **options)


def load_text_training_data(
    args: argparse.Namespace, folder: str, flag: str = "--model", seed: int | None = None
) -> tuple:
    """A text corpus for training the causal LM in ``folder`` and its size in blocks of --max-length
    tokens (a subset of --max-train-samples of them, drawn with ``seed``, default --seed)."""
    from prunekit.data.text import packed_blocks
    from prunekit.models import load_tokenizer

    data = load_data_for_model(args, folder, need_train=True, text=True, flag=flag)
    data.train.max_blocks, data.train.seed = args.max_train_samples, args.seed if seed is None else seed
    return data, len(packed_blocks(load_tokenizer(folder), data.train, args.max_length))


def stage_context(args: argparse.Namespace, folder: str, model, tokenizer, data=None, **fields):
    """The ``StageContext`` of a command: the model as loaded from ``folder``, the data and evaluation
    flags (``fields``: calibration, masks, ...)."""
    from prunekit.stages import EvaluationSettings, StageContext

    evaluation = EvaluationSettings(max_length=args.max_length, stride=args.stride,
                                    max_eval_tokens=args.max_eval_tokens,
                                    batch_size=getattr(args, "eval_batch_size", None))  # fmt: skip
    return StageContext(model, tokenizer, data, model_name=args.model, model_path=folder, task=task_of(folder),
                        evaluation=evaluation, encoding=args.encoding, **fields)  # fmt: skip


def task_of(folder: str) -> str | None:
    """The task recorded in a model folder's summary.json, if it has one."""
    try:
        return json.loads((Path(folder) / "summary.json").read_text()).get("task")
    except (OSError, ValueError):
        return None


def write_optional_json(path: str | None, summary: dict) -> None:
    from prunekit.io import write_json_atomic

    if path:
        write_json_atomic(path, summary)


def _generation_line(stats: dict) -> str:
    return (
        f"  {'generate':<22} prefill {stats['prefill_ms']:.1f} ms, decode {stats['decode_tokens_per_s']:.1f} tokens/s, "
        f"KV cache {stats['kv_cache_bytes_per_token']:,} B/token (batch {stats['batch_size']}, prompt "
        f"{stats['prompt_len']}, {stats['new_tokens']} new)"
    )


def print_result(summary: dict, footer: str | None = None) -> None:
    """A short human-readable view of a result record."""
    lines = [f"{summary['kind']}: {summary['model']}" + (f" on {summary['task']}" if summary.get("task") else "")]
    for name, value in summary.get("metrics", {}).items():
        marker = "  (main)" if name == summary.get("main_metric") else ""
        lines.append(f"  {name:<22} {value:.4f}{marker}")
    lines.append(f"  {'params_total':<22} {summary['params_total']:,}")
    lines.append(f"  {'params_nonzero':<22} {summary['params_nonzero']:,}")
    if "sparsity" in summary:
        lines.append(f"  {'sparsity':<22} {summary['sparsity']:.4f}")
    if summary.get("size_bytes") is not None:
        lines.append(f"  {'size_bytes':<22} {summary['size_bytes']:,}")
    if "latency_ms" in summary:
        lat = summary["latency_ms"]
        lines.append(
            f"  {'latency_ms':<22} median {lat['median']:.2f} (min {lat['min']:.2f}, max {lat['max']:.2f}) "
            f"batch {lat['batch_size']} x seq {lat['seq_len']}, {lat['threads']} threads"
        )
        lines.append(f"  {'flops':<22} {summary['flops']:.3e}")
    if "generate" in summary:
        lines.append(_generation_line(summary["generate"]))
    if summary.get("ratio_vs") is not None:
        vs = summary["vs"]
        if "generate" in vs:
            lines.append(f"  vs {vs['model']}:\n{_generation_line(vs['generate'])}")
            lines.append(f"  {'decode speed-up':<22} {summary['ratio_vs']:.3f}x")
            lines.append(f"  {'prefill speed-up':<22} {summary['ratio_vs_prefill']:.3f}x")
        else:
            lines.append(f"  vs {vs['model']}: median {vs['latency_ms']['median']:.2f} ms, flops {vs['flops']:.3e}")
            lines.append(f"  {'ratio_vs (speed-up)':<22} {summary['ratio_vs']:.3f}x")
    if footer:
        lines.append(footer)
    print("\n".join(lines))
