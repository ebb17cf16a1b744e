"""OWL (outlier-weighted layer-wise sparsity) vs uniform layer sparsity for Wanda and SparseGPT on
SmolLM2-135M, at 50 % and 70 %.

Same setting as `bench/llm_oneshot.py`: every attention and FFN projection of the 30 layers, 64
calibration windows of 512 tokens from brown/train.txt (seed 0), perplexity on the first 16,384 tokens
of brown/dev.txt. OWL arms add `--layer-sparsity owl` with its defaults (threshold 5, spread 0.08: the
layer sparsities span 0.16 around the target); their per-layer sparsities come from the summary.

Run: python bench/owl.py [--sparsities 0.5 0.7] [--importance wanda sparsegpt]
  -> bench/results/owl.{json,md}  (~25 min on 2 cores)
"""

from __future__ import annotations

import argparse

from harness import markdown_table, write_results
from llm_oneshot import Setting, _row, add_setting_arguments


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_setting_arguments(parser)
    parser.add_argument("--sparsities", nargs="+", type=float, default=[0.5, 0.7])
    parser.add_argument("--importance", nargs="+", choices=["wanda", "sparsegpt"], default=["wanda", "sparsegpt"])
    args = parser.parse_args()
    setting = Setting(args)
    results = setting.record(args)
    for sparsity in args.sparsities:
        for importance in args.importance:
            for layers in ("uniform", "owl"):
                owl = ["--layer-sparsity", "owl"] if layers == "owl" else []
                summary = setting.prune("--importance", importance, "--sparsity", f"{sparsity:g}", *owl)
                row = _row(f"{importance} {sparsity:.0%} {layers}", summary)
                row.update(importance=importance, target=sparsity, layer_sparsity=layers)
                if "owl" in summary:
                    row["layer_sparsities"] = summary["owl"]["layer_sparsities"]
                results["arms"].append(row)
                write_results("owl", results, table(results))
    print(table(results))


def table(results: dict) -> str:
    dense = results["dense_perplexity"]
    header = ["method", "sparsity", "layers", "perplexity (Brown dev)", "× dense", "OWL vs uniform",
              "layer sparsity range", "prune time (s)"]  # fmt: skip
    arms = results["arms"]
    uniform = {(r["importance"], r["target"]): r["perplexity"] for r in arms if r["layer_sparsity"] == "uniform"}
    body = []
    for row in arms:
        base = uniform.get((row["importance"], row["target"]))
        versus = "—" if row["layer_sparsity"] == "uniform" or base is None else f"{row['perplexity'] / base - 1:+.1%}"
        spread = row.get("layer_sparsities")
        span = f"{min(spread):.3f}–{max(spread):.3f}" if spread else "—"
        body.append([row["importance"], f"{row['target']:.0%}", row["layer_sparsity"], f"{row['perplexity']:.2f}",
                     f"{row['perplexity'] / dense:.3f}", versus, span, f"{row['prune_seconds']:.0f}"])  # fmt: skip
    return f"Dense perplexity {dense:.2f}.\n\n" + markdown_table(header, body)


if __name__ == "__main__":
    main()
