"""Is an ONNX export's difference from PyTorch a graph error or float32 rounding? Both are compared with
the same model run in float64 (the exact result, to float32's eyes), on one random batch.

Run: python bench/export_precision.py [--model smollm2] -> bench/results/export-precision-MODEL.{json,md} (~2 min)
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from harness import markdown_table, write_results

from prunekit.export.onnx import LogitsGraph, OnnxRunner, export_onnx, sample_inputs
from prunekit.models import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--seq-len", type=int, default=128)
    args = parser.parse_args()
    model, tokenizer = load_model(args.model)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        names = export_onnx(model, tokenizer, path, 18)
        inputs = sample_inputs(model, names, args.batch_size, args.seq_len, seed=1)
        got = OnnxRunner(path, 2)(**inputs)
    with torch.inference_mode():
        float32 = LogitsGraph(model).eval()(**inputs).float().numpy()
        exact = LogitsGraph(model.double()).eval()(**inputs).numpy()
    diff = np.abs(got - float32)
    result = {
        "model": args.model,
        "shape": [args.batch_size, args.seq_len],
        "onnx_vs_torch": float(diff.max()),
        "torch_float32_vs_float64": float(np.abs(float32 - exact).max()),
        "onnx_vs_float64": float(np.abs(got - exact).max()),
        "max_abs_logit": float(np.abs(float32).max()),
        "relative_at_max": float(diff.max() / abs(float32.flat[diff.argmax()])),
    }
    rows = [
        ["ONNX Runtime vs PyTorch (float32)", f"{result['onnx_vs_torch']:.3g}"],
        ["PyTorch float32 vs the same model in float64", f"{result['torch_float32_vs_float64']:.3g}"],
        ["ONNX Runtime vs float64", f"{result['onnx_vs_float64']:.3g}"],
    ]
    header = ["comparison", "max \\|difference\\| of the logits"]
    text = (
        f"Batch {args.batch_size} x {args.seq_len}, one random batch.\n\n{markdown_table(header, rows)}\n\n"
        f"Largest |logit| {result['max_abs_logit']:.1f}; at the largest ONNX-PyTorch difference it is "
        f"{result['relative_at_max']:.1e} of the logit."
    )
    write_results(f"export-precision-{args.model}", result, text)
    print(text)


if __name__ == "__main__":
    main()
