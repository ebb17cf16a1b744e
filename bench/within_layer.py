"""SparseGPT and Wanda on SmolLM2-135M with each layer's projections scored together (one pass over the
layer's input) or in sequence (q/k/v, then o on the pruned q/k/v's output, then gate/up, then down:
`--within-layer sequential`, SparseGPT's "true sequential"), at 50 % and 2:4.

Same setting as `bench/llm_oneshot.py` and `bench/owl.py` (64 calibration windows of 512 tokens, seed 0;
perplexity on the first 16,384 tokens of brown/dev.txt); the `together` rows are the same commands as
bench/owl.py's uniform rows (cached when that bench ran first).

Run: python bench/within_layer.py -> bench/results/within-layer.{json,md}  (~25 min on 2 cores)
"""

from __future__ import annotations

import argparse

from harness import markdown_table, write_results
from llm_oneshot import Setting, _row, add_setting_arguments

TARGETS = {"50 %": ["--sparsity", "0.5"], "2:4": ["--pattern", "2:4"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_setting_arguments(parser)
    parser.add_argument("--targets", nargs="+", choices=list(TARGETS), default=list(TARGETS))
    parser.add_argument("--importance", nargs="+", choices=["wanda", "sparsegpt"], default=["sparsegpt", "wanda"])
    args = parser.parse_args()
    setting = Setting(args)
    results = setting.record(args)
    for target in args.targets:
        for importance in args.importance:
            for order in ("together", "sequential"):
                flags = TARGETS[target] + (["--within-layer", "sequential"] if order == "sequential" else [])
                summary = setting.prune("--importance", importance, *flags)
                row = _row(f"{importance} {target} {order}", summary)
                row.update(importance=importance, target=target, within_layer=order)
                results["arms"].append(row)
                write_results("within-layer", results, table(results))
    print(table(results))


def table(results: dict) -> str:
    dense, arms = results["dense_perplexity"], results["arms"]
    together = {(r["importance"], r["target"]): r["perplexity"] for r in arms if r["within_layer"] == "together"}
    header = ["method", "target", "within a layer", "perplexity (Brown dev)", "× dense", "vs together",
              "prune time (s)", "peak RSS (MiB)"]  # fmt: skip
    body = []
    for row in arms:
        base = together.get((row["importance"], row["target"]))
        versus = "—" if row["within_layer"] == "together" or base is None else f"{row['perplexity'] / base - 1:+.1%}"
        body.append([row["importance"], row["target"], row["within_layer"], f"{row['perplexity']:.2f}",
                     f"{row['perplexity'] / dense:.3f}", versus, f"{row['prune_seconds']:.0f}",
                     f"{row['peak_rss_mb']:.0f}"])  # fmt: skip
    return f"Dense perplexity {dense:.2f}.\n\n" + markdown_table(header, body)


if __name__ == "__main__":
    main()
