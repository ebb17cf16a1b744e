"""``prunekit export onnx``: the ``export`` stage from the command line (see ``prunekit.stages.export``):
the model as an ONNX file, checked against PyTorch under ONNX Runtime and timed beside it."""

from __future__ import annotations

import argparse

from prunekit.commands.common import preflight, print_result, write_optional_json
from prunekit.options import add_config_arguments, config_from_args
from prunekit.stages.export import ExportStageConfig


def add_parser(commands) -> None:
    p = commands.add_parser("export", help="export a model for other runtimes (ONNX), checked and timed")
    formats = p.add_subparsers(dest="format", required=True, metavar="FORMAT")
    p = formats.add_parser(
        "onnx", help="ONNX graph of the logits (dynamic batch and length), checked and timed under ONNX Runtime"
    )
    p.add_argument("--model", required=True, help="model folder (dense, sparse or pruned), or minilm / smollm2")
    p.add_argument("--out", dest="out_file", required=True, help="the ONNX file to write, e.g. model.onnx")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    add_config_arguments(p, ExportStageConfig, skip=("format",))
    p.add_argument("--json", help="also write the result to this JSON file")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> dict:
    from prunekit.io import check_output_file, recover_output_dir
    from prunekit.stages import STAGES, StageInputs, execute

    config = config_from_args(ExportStageConfig, args)
    folder = preflight(args, {"--model": args.model}, length_flag="--seq-len")["--model"]
    recover_output_dir(args.out_file)
    out = check_output_file(args.out_file, args.overwrite, [("--model", folder)])
    summary = execute(STAGES["export"], config, StageInputs(args.model, out=str(out)))
    write_optional_json(args.json, summary)
    difference, onnx, torch = summary["max_abs_diff"], summary["onnxruntime_latency_ms"], summary["torch_latency_ms"]
    print_result(
        summary,
        f"  {'max |ONNX - PyTorch|':<22} {difference:.2e} (--atol {config.atol:g})\n"
        f"  {'latency (median)':<22} ONNX Runtime {onnx['median']:.2f} ms, PyTorch {torch['median']:.2f} ms "
        f"at batch {config.batch_size} x seq {config.seq_len}: {summary['ratio_vs_torch']:.2f}x\n"
        f"saved to {out}",
    )
    return summary
