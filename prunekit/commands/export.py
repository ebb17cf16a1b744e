"""``prunekit export onnx``: the model as an ONNX file, checked against PyTorch under ONNX Runtime and
timed beside it."""

from __future__ import annotations

import argparse
import copy

from prunekit.commands.common import preflight, print_result, task_of, write_optional_json
from prunekit.errors import ConfigError, ExportError, PrunekitError
from prunekit.options import int_range, non_negative, positive, positive_int

OPSET = 18  # ONNX opset of the exported graph unless --opset says otherwise
# what torch.onnx (dynamo) writes as asked and ONNX Runtime loads here: below 17 it silently writes 18,
# above 25 an invalid graph (tests/test_export.py checks both ends)
OPSETS = (17, 25)


def add_parser(commands) -> None:
    p = commands.add_parser("export", help="export a model for other runtimes (ONNX), checked and timed")
    formats = p.add_subparsers(dest="format", required=True, metavar="FORMAT")
    p = formats.add_parser(
        "onnx", help="ONNX graph of the logits (dynamic batch and length), checked and timed under ONNX Runtime"
    )
    p.add_argument("--model", required=True, help="model folder (dense, sparse or pruned), or minilm / smollm2")
    p.add_argument("--out", dest="out_file", required=True, help="the ONNX file to write, e.g. model.onnx")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument(
        "--opset",
        type=int_range(*OPSETS),
        default=OPSET,
        help=f"ONNX opset version, {OPSETS[0]} to {OPSETS[1]} (default {OPSET})",
    )
    p.add_argument(
        "--atol",
        type=positive,
        default=1e-4,
        help="largest difference allowed between ONNX Runtime's and PyTorch's logits (default 1e-4)",
    )
    p.add_argument(
        "--rtol",
        type=non_negative,
        default=0.0,
        help="also allow this fraction of each logit's size (numpy's allclose rule: |a - b| <= atol + rtol x |b|); "
        "default 0",
    )
    p.add_argument(
        "--reference",
        choices=["float32", "float64"],
        default="float32",
        help="float32 (default): ONNX Runtime's logits within --atol (+ --rtol) of PyTorch's; float64: ONNX Runtime "
        "no further from the model run in float64 than PyTorch's float32 logits are, plus --atol (for large "
        "decoders, whose float32 rounding alone exceeds 1e-4)",
    )
    group = p.add_argument_group("timing (ONNX Runtime vs PyTorch, interleaved)")
    group.add_argument("--batch-size", type=positive_int, default=1, help="sequences per batch (default 1)")
    group.add_argument("--seq-len", type=positive_int, default=128, help="tokens per sequence (default 128)")
    group.add_argument("--threads", type=positive_int, default=2)
    group.add_argument("--repeats", type=positive_int, default=20, help="timed runs of each (default 20)")
    p.add_argument("--json", help="also write the result to this JSON file")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> dict:
    from prunekit.evaluation import make_summary
    from prunekit.export import OnnxRunner, export_onnx, max_difference, sample_inputs, time_against_torch
    from prunekit.io import check_output_file, recover_output_dir
    from prunekit.models import count_parameters, load_model

    folder = preflight(args, {"--model": args.model}, length_flag="--seq-len")["--model"]
    recover_output_dir(args.out_file)
    out = check_output_file(args.out_file, args.overwrite, [("--model", folder)])
    _check_onnx_installed()
    model, tokenizer = load_model(args.model)
    names = export_onnx(model, tokenizer, out, args.opset)
    try:
        runner = OnnxRunner(out, args.threads)
        # a small padded batch, then the timed shape: both checked, the second also timed
        batches = [
            sample_inputs(model, names, 2, 16, seed=0),
            sample_inputs(model, names, args.batch_size, args.seq_len, seed=1),
        ]
        exact = copy.deepcopy(model).double() if args.reference == "float64" else None
        differences = [max_difference(model, runner, batch, args.rtol, exact) for batch in batches]
        del exact
        difference, excess = max(d for d, _ in differences), max(e for _, e in differences)
        if not excess <= args.atol:  # NaN fails too
            if args.reference == "float64":
                bound = f"{excess:.3g} further from float64 than PyTorch float32 is, > --atol {args.atol:g}"
            else:
                bound = f"> --atol {args.atol:g}" + (f" + --rtol {args.rtol:g} x |logit|" if args.rtol else "")
            raise ExportError(f"--out {out}: ONNX Runtime's logits differ from PyTorch's by {difference:.3g} ({bound})")
    except BaseException as err:  # a file that failed its check is not left behind
        out.unlink(missing_ok=True)
        if isinstance(err, PrunekitError):
            raise type(err)(f"{err}; {out} was removed") from None
        raise
    torch_stats, onnx_stats = time_against_torch(model, runner, batches[1], args.threads, args.repeats)
    total, nonzero = count_parameters(model)
    summary = make_summary(
        "export",
        args.model,
        task_of(folder),
        model_path=folder,
        format="onnx",
        path=str(out),
        size_bytes=out.stat().st_size,
        params_total=total,
        params_nonzero=nonzero,
        inputs=list(names),
        opset=args.opset,
        max_abs_diff=difference,
        atol=args.atol,
        rtol=args.rtol,
        reference=args.reference,
        beyond_reference=round(excess, 9) if args.reference == "float64" else None,
        onnxruntime_latency_ms=onnx_stats.as_dict(),
        torch_latency_ms=torch_stats.as_dict(),
        ratio_vs_torch=round(torch_stats.median / onnx_stats.median, 4),
    )
    write_optional_json(args.json, summary)
    print_result(
        summary,
        f"  {'max |ONNX - PyTorch|':<22} {difference:.2e} (--atol {args.atol:g})\n"
        f"  {'latency (median)':<22} ONNX Runtime {onnx_stats.median:.2f} ms, PyTorch {torch_stats.median:.2f} ms "
        f"at batch {args.batch_size} x seq {args.seq_len}: {summary['ratio_vs_torch']:.2f}x\n"
        f"saved to {out}",
    )
    return summary


def _check_onnx_installed() -> None:
    import importlib.util

    missing = [name for name in ("onnx", "onnxruntime", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"export onnx needs {', '.join(missing)}: pip install 'prunekit[export]'")
