"""``prunekit bench``: CPU latency and FLOPs, optionally as a speed-up ratio against ``--vs``."""

from __future__ import annotations

import argparse

from prunekit.commands.common import count, positive_int, preflight, print_result, task_of, write_optional_json


def add_parser(commands) -> None:
    p = commands.add_parser("bench", help="CPU latency and FLOPs, optionally as a ratio against --vs")
    p.add_argument("--model", required=True, help="model folder")
    p.add_argument("--vs", help="baseline model folder, timed interleaved in the same run")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--seq-len", type=positive_int, default=128)
    p.add_argument("--threads", type=positive_int, default=2)
    p.add_argument("--warmup", type=count, default=3)
    p.add_argument("--repeats", type=positive_int, default=20)
    p.add_argument("--json", help="also write the result to this JSON file")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> dict:
    from prunekit.evaluation import count_flops, make_inputs, make_summary, measure_latency, model_size
    from prunekit.models import load_model

    folders = preflight(args, {"--model": args.model, "--vs": args.vs}, length_flag="--seq-len")
    names = [args.model] + ([args.vs] if args.vs else [])
    models = [load_model(name, flag=flag)[0] for name, flag in zip(names, ("--model", "--vs"))]
    inputs = [make_inputs(model, args.batch_size, args.seq_len) for model in models]
    flops = [count_flops(model, batch) for model, batch in zip(models, inputs)]
    stats = measure_latency(models, inputs, threads=args.threads, warmup=args.warmup, repeats=args.repeats)

    def describe(index: int) -> dict:
        folder = folders[("--model", "--vs")[index]]
        return dict(**model_size(models[index], folder), latency_ms=stats[index].as_dict(), flops=flops[index])

    summary = make_summary("bench", args.model, task_of(folders["--model"]), **describe(0), ratio_vs=None)
    if args.vs:
        # ratio_vs: how many times faster --model is than --vs (> 1 means faster).
        summary["ratio_vs"] = round(stats[1].median / stats[0].median, 4)
        summary["vs"] = {"model": args.vs, **describe(1)}
    write_optional_json(args.json, summary)
    print_result(summary)
    return summary
