"""ONNX export of dense and compressed models: parity with PyTorch and ONNX Runtime's latency beside it.

Models: MiniLM-L6 (the packaged `minilm`) dense; MiniLM with half the heads and half the FFN neurons
removed (`prune structured --importance magnitude --scope uniform`: no data needed, the speed is what
is measured here); MiniLM with 70 % of its layers' weights zeroed (`prune magnitude`); SmolLM2-135M
dense and with 8 of its 30 layers dropped (block influence on 32 windows of Brown train). Each is
exported with `prunekit export onnx` and timed against PyTorch in the same process, interleaved,
at batch 1 x 128 tokens and at `--batch-size` (default 32) x 128, two threads.

Run: python bench/export.py [--only TEXT] [--reference float64]
  -> bench/results/export[-TEXT][-float64].{json,md} (~10 min; SmolLM2 alone ~20 min with float64)
"""

from __future__ import annotations

import argparse

from harness import BROWN, markdown_table, prunekit, trained, work_dir, write_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=32, help="the second timed shape's batch (default 32)")
    parser.add_argument("--rtol", type=float, default=0.0, help="export's --rtol (default 0: --atol 1e-4 alone)")
    parser.add_argument("--only", help="only the models whose label contains this text, e.g. SmolLM2")
    parser.add_argument("--reference", choices=["float32", "float64"], default="float32", help="export's --reference")
    args = parser.parse_args()
    work = work_dir("export")
    models = {  # label -> a packaged model, or the prune command that makes it (once: the harness caches it)
        "MiniLM-L6 dense": "minilm",
        "MiniLM-L6, heads + FFN 50 % removed": ["structured", "--model", "minilm", "--heads", "0.5", "--ffn", "0.5",
                                                "--scope", "uniform", "--importance", "magnitude"],
        "MiniLM-L6, 70 % of the layers' weights zero": ["magnitude", "--model", "minilm", "--sparsity", "0.7"],
        "SmolLM2-135M dense (causal LM)": "smollm2",
        "SmolLM2-135M, 22 of 30 layers": ["structured", "--model", "smollm2", "--layers", "22", "--layer-importance",
                                          "block-influence", "--data", BROWN, "--calibration-samples", "32",
                                          "--calibration-length", "256", "--calibration-seed", "0",
                                          "--max-eval-tokens", "512"],
    }  # fmt: skip
    name = f"export-{args.only.lower()}" if args.only else "export"
    name += "-float64" if args.reference == "float64" else ""
    results = {"rtol": args.rtol, "reference": args.reference, "rows": []}
    for index, (label, model) in enumerate(models.items()):
        if args.only and args.only not in label:
            continue
        if isinstance(model, list):
            model = trained("prune", *model)[0]
        for batch in (1, args.batch_size):
            summary = prunekit("export", "onnx", "--model", model, "--out", work / f"{index}.onnx", "--overwrite",
                               "--batch-size", str(batch), "--seq-len", "128", "--threads", "2",
                               "--rtol", str(args.rtol), "--reference", args.reference,
                               "--json", work / f"{index}-b{batch}.json")  # fmt: skip
            results["rows"].append(
                {
                    "model": label,
                    "batch_size": batch,
                    "params_nonzero": summary["params_nonzero"],
                    "onnx_bytes": summary["size_bytes"],
                    "max_abs_diff": summary["max_abs_diff"],
                    "beyond_reference": summary.get("beyond_reference"),  # --reference float64
                    "torch_ms": summary["torch_latency_ms"]["median"],
                    "onnxruntime_ms": summary["onnxruntime_latency_ms"]["median"],
                    "ratio_vs_torch": summary["ratio_vs_torch"],
                }
            )
            write_results(name, results, table(results))
    print(table(results))


def table(results: dict) -> str:
    float64 = results["reference"] == "float64"
    header = ["model", "batch × 128", "non-zero params", "ONNX file", "max \\|ONNX − PyTorch\\|",
              *(["ONNX's distance from float64 minus PyTorch float32's"] if float64 else []), "PyTorch",
              "ONNX Runtime", "ONNX Runtime speed-up"]  # fmt: skip
    body = [
        [row["model"], str(row["batch_size"]), f"{row['params_nonzero'] / 1e6:.1f} M",
         f"{row['onnx_bytes'] / 1e6:.0f} MB", f"{row['max_abs_diff']:.1e}",
         *([f"{row['beyond_reference']:.2e}"] if float64 else []), f"{row['torch_ms']:.1f} ms",
         f"{row['onnxruntime_ms']:.1f} ms", f"{row['ratio_vs_torch']:.2f}×"]
        for row in results["rows"]
    ]  # fmt: skip
    return markdown_table(header, body)


if __name__ == "__main__":
    main()
