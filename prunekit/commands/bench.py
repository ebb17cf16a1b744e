"""``prunekit bench``: CPU latency and FLOPs, optionally as a speed-up ratio against ``--vs``;
``--generate``: a causal LM's prefill latency, decode throughput and KV-cache size."""

from __future__ import annotations

import argparse

from prunekit.commands.common import preflight, print_result, write_optional_json
from prunekit.devices import model_device, placement_record
from prunekit.errors import ConfigError
from prunekit.evaluation.bench import REPEATS, SHAPE
from prunekit.options import add_config_arguments, config_from_args, positive_int
from prunekit.stages import STAGES
from prunekit.stages.bench import TimingConfig


def add_parser(commands) -> None:
    p = commands.add_parser("bench", help="CPU latency and FLOPs, optionally as a ratio against --vs")
    p.add_argument("--model", required=True, help="model folder")
    p.add_argument("--vs", help="baseline model folder, timed interleaved in the same run")
    add_config_arguments(p, TimingConfig, skip=STAGES["bench"].omit)
    generation = p.add_argument_group("generation (causal LMs)")
    generation.add_argument(
        "--generate",
        action="store_true",
        help="time greedy generation with the KV cache: prefill latency, decode tokens/s, KV-cache bytes per token",
    )
    generation.add_argument("--prompt-len", type=positive_int, default=128, help="prompt tokens (default 128)")
    generation.add_argument("--new-tokens", type=positive_int, default=64, help="decode steps (default 64)")
    p.add_argument("--json", help="also write the result to this JSON file")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> dict:
    from prunekit.evaluation import count_flops, make_inputs, make_summary, measure_latency, model_size
    from prunekit.models import load_model, task_of

    if args.generate:
        args.seq_len = args.prompt_len + args.new_tokens  # what the position embeddings must hold
    label = "--prompt-len + --new-tokens" if args.generate else None
    folders = preflight(args, {"--model": args.model, "--vs": args.vs}, length_flag="--seq-len", length_label=label)
    names = [args.model] + ([args.vs] if args.vs else [])
    timing = config_from_args(TimingConfig, args)
    runtime = timing.runtime
    where = dict(dtype=runtime.torch_dtype(), device=runtime.torch_device(), **timing.offload.load_options())
    models = [load_model(name, flag=flag, **where)[0] for name, flag in zip(names, ("--model", "--vs"))]
    if args.generate:
        return run_generation(args, models, folders, runtime.record())
    args.batch_size, args.repeats = args.batch_size or SHAPE[0], args.repeats or REPEATS
    inputs = [make_inputs(model, args.batch_size, args.seq_len) for model in models]
    flops = [count_flops(model, batch) for model, batch in zip(models, inputs)]
    stats = measure_latency(models, inputs, threads=args.threads, warmup=args.warmup, repeats=args.repeats)

    def describe(index: int) -> dict:
        folder = folders[("--model", "--vs")[index]]
        return dict(**model_size(models[index], folder), latency_ms=stats[index].as_dict(), flops=flops[index])

    summary = make_summary("bench", args.model, task_of(folders["--model"]), **describe(0), ratio_vs=None,
                           **runtime.record())  # fmt: skip
    summary.update(placement_record(models[0]))
    _note_sparse_kernels(summary, folders["--model"], where["device"])
    if args.vs:
        # ratio_vs: how many times faster --model is than --vs (> 1 means faster).
        summary["ratio_vs"] = round(stats[1].median / stats[0].median, 4)
        summary["vs"] = {"model": args.vs, **describe(1)}
    write_optional_json(args.json, summary)
    print_result(summary)
    return summary


def run_generation(args: argparse.Namespace, models: list, folders: dict[str, str], runtime: dict) -> dict:
    from prunekit.evaluation import make_summary, model_size
    from prunekit.evaluation.generation import measure_generation
    from prunekit.memory import peak_rss_mb
    from prunekit.models import is_causal_lm, task_of

    for model, flag in zip(models, ("--model", "--vs")):
        if not is_causal_lm(model.config):
            raise ConfigError(f"{flag} {getattr(args, flag[2:])}: --generate needs a causal language model")
    stats = measure_generation(models, prompt_len=args.prompt_len, new_tokens=args.new_tokens,
                               batch_size=args.batch_size or 1, threads=args.threads, warmup=min(args.warmup, 2),
                               repeats=args.repeats or 10)  # fmt: skip

    def describe(index: int) -> dict:
        folder = folders[("--model", "--vs")[index]]
        return dict(**model_size(models[index], folder), generate=stats[index].as_dict())

    summary = make_summary("bench", args.model, task_of(folders["--model"]), model_path=folders["--model"],
                           **describe(0), ratio_vs=None, **runtime)  # fmt: skip
    if args.vs:
        # > 1 means --model is faster: decode throughput ratio; prefill latency ratio
        summary["ratio_vs"] = round(stats[0].decode_tokens_per_s / stats[1].decode_tokens_per_s, 4)
        summary["ratio_vs_prefill"] = round(stats[1].prefill_ms / stats[0].prefill_ms, 4)
        summary["vs"] = {"model": args.vs, "model_path": folders["--vs"], **describe(1)}
    summary.update(placement_record(models[0]), peak_rss_mb=peak_rss_mb())
    _note_sparse_kernels(summary, folders["--model"], model_device(models[0]))
    write_optional_json(args.json, summary)
    print_result(summary)
    return summary


def _note_sparse_kernels(summary: dict, folder: str, device) -> None:
    """An N:M model is timed dense: say so in one line and in ``sparse_kernels``."""
    from prunekit.evaluation.bench import nm_pattern, sparse_kernels
    from prunekit.pruning.masks import MaskSet

    masks = MaskSet.load(folder)
    note = sparse_kernels(nm_pattern(masks.masks) if masks is not None else None, device)
    if note is not None:
        summary["sparse_kernels"] = note
        print(f"prunekit bench: note: {note['why']}")
