"""Arguments and output shared by the commands."""

from __future__ import annotations

import argparse

from prunekit.errors import ConfigError
from prunekit.options import add_config_arguments, config_from_args


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder (model + summary.json)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def add_data_arguments(parser: argparse.ArgumentParser, with_train: bool) -> None:
    """The ``--data`` flags (``stages.inputs.DataConfig``); ``with_train``: also ``--train``."""
    from prunekit.stages.inputs import DataConfig

    add_config_arguments(parser.add_argument_group("data"), DataConfig, skip=() if with_train else ("train",))


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
    from prunekit.io import check_json_path, check_output_dir, recover_output_dir
    from prunekit.models import check_max_length, load_config, resolve_model
    from prunekit.stages.inputs import DataConfig, default_max_length

    folders = {flag: resolve_model(name, flag) for flag, name in models.items() if name is not None}
    configs = {flag: load_config(folder, flag) for flag, folder in folders.items()}
    if length_flag == "--max-length" and args.max_length is None:
        args.max_length = default_max_length(config_from_args(DataConfig, args), configs.values())
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
    "--train": "train",
    "--eval": "eval",
    "--vocab-from": "vocab_from",
    "--adapter": "adapter",
}


def add_checkpoint_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint-dir", help="folder for --checkpoint-every's checkpoints")


def run_training_stage(name: str, args: argparse.Namespace, config, model: str | None) -> dict:
    """Run a training stage as a command: from ``model``, the Trainer working in ``--checkpoint-dir`` (with
    ``--checkpoint-every``) or a scratch folder, the result saved to ``--out``. Returns the summary ({} in
    every torchrun process but the first)."""
    from prunekit.stages import STAGES, StageInputs, execute

    if config.training.checkpoint_every and not args.checkpoint_dir:
        raise ConfigError("--checkpoint-every: also pass --checkpoint-dir (where the checkpoints go)")
    checkpoints = args.checkpoint_dir if config.training.checkpoint_every else None
    return execute(STAGES[name], config, StageInputs(model, out=args.out, overwrite=args.overwrite), checkpoints)


def data_kwargs(args: argparse.Namespace) -> dict:
    """The data flags as ``load_task_data`` keyword arguments."""
    from prunekit.stages.inputs import DataConfig

    return config_from_args(DataConfig, args).task_options()


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
