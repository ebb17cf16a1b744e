"""ONNX export of dense and compressed models: parity with PyTorch and ONNX Runtime's latency beside it.

Models: MiniLM-L6 (the packaged `minilm`) dense; MiniLM with half the heads and half the FFN neurons
removed (`prune structured --importance magnitude --scope uniform`: no data needed, the speed is what
is measured here); MiniLM with 70 % of its layers' weights zeroed (`prune magnitude`); SmolLM2-135M
dense and with 8 of its 30 layers dropped (block influence on 32 windows of Brown train). Each is
exported with `prunekit export onnx` and timed against PyTorch in the same process, interleaved,
at batch 1 x 128 tokens and at `--batch-size` (default 32) x 128, two threads.

Run: python bench/export.py -> bench/results/export.{json,md} (~10 min)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from harness import prunekit

from prunekit.io import write_json_atomic

HERE = Path(__file__).resolve().parent
BROWN = HERE.parent.parent / "shared" / "data" / "brown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=32, help="the second timed shape's batch (default 32)")
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "prunekit-bench-export"))
    parser.add_argument("--rtol", type=float, default=0.0, help="export's --rtol (default 0: --atol 1e-4 alone)")
    parser.add_argument("--only", help="only the models whose label contains this text, e.g. SmolLM2")
    parser.add_argument("--reference", choices=["float32", "float64"], default="float32", help="export's --reference")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    pruned = {  # folder -> the prune command that makes it (an existing folder is reused)
        "minilm-heads-ffn-50": ["structured", "--model", "minilm", "--heads", "0.5", "--ffn", "0.5", "--scope",
                                "uniform", "--importance", "magnitude"],
        "minilm-sparse-70": ["magnitude", "--model", "minilm", "--sparsity", "0.7"],
        "smollm2-22-layers": ["structured", "--model", "smollm2", "--layers", "22", "--layer-importance",
                              "block-influence", "--data", str(BROWN), "--calibration-samples", "32",
                              "--calibration-length", "256", "--calibration-seed", "0", "--max-eval-tokens", "512"],
    }  # fmt: skip
    for folder, command in pruned.items():
        prunekit("prune", *command, "--out", str(work / folder))
    models = {
        "MiniLM-L6 dense": "minilm",
        "MiniLM-L6, heads + FFN 50 % removed": str(work / "minilm-heads-ffn-50"),
        "MiniLM-L6, 70 % of the layers' weights zero": str(work / "minilm-sparse-70"),
        "SmolLM2-135M dense (causal LM)": "smollm2",
        "SmolLM2-135M, 22 of 30 layers": str(work / "smollm2-22-layers"),
    }
    name = f"export-{args.only.lower()}" if args.only else "export"
    results = {
        "benchmark": name,
        "rtol": args.rtol,
        "command": " ".join(["python", "bench/export.py", *sys.argv[1:]]),
        "rows": [],
    }
    for index, (label, model) in enumerate(models.items()):
        if args.only and args.only not in label:
            continue
        for batch in (1, args.batch_size):
            summary = prunekit("export", "onnx", "--model", model, "--out", str(work / f"{index}.onnx"), "--overwrite",
                               "--batch-size", str(batch), "--seq-len", "128", "--threads", "2",
                               "--rtol", str(args.rtol), "--reference", args.reference,
                               "--json", str(work / f"{index}-b{batch}.json"))  # fmt: skip
            results["rows"].append(
                {
                    "model": label,
                    "batch_size": batch,
                    "params_nonzero": summary["params_nonzero"],
                    "onnx_bytes": summary["size_bytes"],
                    "max_abs_diff": summary["max_abs_diff"],
                    "torch_ms": summary["torch_latency_ms"]["median"],
                    "onnxruntime_ms": summary["onnxruntime_latency_ms"]["median"],
                    "ratio_vs_torch": summary["ratio_vs_torch"],
                }
            )
            write_json_atomic(HERE / "results" / f"{name}.json", results)
    print(write_table(results))


def write_table(results: dict) -> str:
    lines = [
        f"Command: `{results['command']}`",
        "",
        "| model | batch × 128 | non-zero params | ONNX file | max \\|ONNX − PyTorch\\| | PyTorch | ONNX Runtime "
        "| ONNX Runtime speed-up |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        lines.append(
            f"| {row['model']} | {row['batch_size']} | {row['params_nonzero'] / 1e6:.1f} M | "
            f"{row['onnx_bytes'] / 1e6:.0f} MB | {row['max_abs_diff']:.1e} | {row['torch_ms']:.1f} ms | "
            f"{row['onnxruntime_ms']:.1f} ms | {row['ratio_vs_torch']:.2f}× |"
        )
    text = "\n".join(lines) + "\n"
    (HERE / "results" / f"{results['benchmark']}.md").write_text(text, encoding="utf-8")
    return text


if __name__ == "__main__":
    main()
