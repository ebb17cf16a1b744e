"""SparseGPT on SmolLM2-135M fit to the pruned model's inputs (as published) or to the dense model's outputs
(`--fit-to dense`, GPTAQ's asymmetric calibration), at 50 % and 2:4, beside llmcompressor's SparseGPT on the
same calibration token ids (`--peer`).

Same setting as `bench/llm_oneshot.py` and `bench/within_layer.py` (calibration windows of 512 tokens drawn
from brown/train.txt with seed 0, `--calibration` of them; perplexity on the first 16,384 tokens of
brown/dev.txt), SparseGPT's defaults otherwise (blocks of 128 columns, 1 % dampening, true-sequential inside
each layer). The #27 target: 50 % at <= 1.75x the dense perplexity and 5 % better
than llmcompressor with the same calibration.

Run: python bench/sparsegpt_fit.py [--calibration 64] [--targets 50 % 2:4] [--peer]
  -> bench/results/sparsegpt-fit[-CAL].{json,md}  (~6 min an arm on 2 cores; the peer ~10 min)
"""

from __future__ import annotations

import argparse

from harness import markdown_table, work_dir, write_results
from llm_oneshot import PEER_ARMS, Setting, _row, add_setting_arguments, run_peer

TARGETS = {"50 %": ["--sparsity", "0.5"], "2:4": ["--pattern", "2:4"]}
FITS = ("pruned", "dense")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_setting_arguments(parser)
    parser.add_argument("--targets", nargs="+", choices=list(TARGETS), default=list(TARGETS))
    parser.add_argument("--dampening", nargs="+", default=["0.01"], help="SparseGPT dampening values to run")
    parser.add_argument("--peer", action="store_true", help="also llmcompressor's SparseGPT 50 %% (see llm_oneshot.py)")
    args = parser.parse_args()
    setting = Setting(args)
    results = setting.record(args)
    name = "sparsegpt-fit" if args.calibration == 64 else f"sparsegpt-fit-{args.calibration}"
    for target in args.targets:
        for dampening in args.dampening:
            for fit in FITS:
                flags = ["--importance", "sparsegpt", *TARGETS[target], "--fit-to", fit]
                if dampening != "0.01":  # left out at its default: the commands the results record
                    flags += ["--dampening", dampening]
                row = _row(f"sparsegpt {target} fit to {fit}", setting.prune(*flags))
                row.update(target=target, fit_to=fit, dampening=float(dampening))
                results["arms"].append(row)
                write_results(name, results, table(results))
    if args.peer:
        arms = {arm: method for arm, method in PEER_ARMS.items() if method == "sparsegpt"}
        for row in run_peer(work_dir(name), setting.dense["model_path"], args.calibration, setting.data, arms):
            results["arms"].append({**row, "target": "50 %", "fit_to": "llmcompressor", "dampening": 0.01})
        write_results(name, results, table(results))
    print(table(results))


def table(results: dict) -> str:
    dense, arms = results["dense_perplexity"], results["arms"]
    peer = next((r["perplexity"] for r in arms if r["fit_to"] == "llmcompressor"), None)
    header = ["target", "fit to", "dampening", "perplexity (Brown dev)", "× dense", "vs llmcompressor",
              "prune time (s)", "peak RSS (MiB)"]  # fmt: skip
    body = [
        [row["target"], row["fit_to"], f"{row['dampening']:g}", f"{row['perplexity']:.2f}",
         f"{row['perplexity'] / dense:.3f}",
         "—" if peer is None or row["target"] != "50 %" else f"{row['perplexity'] / peer - 1:+.1%}",
         f"{row['prune_seconds']:.0f}", f"{row['peak_rss_mb']:.0f}"]
        for row in arms
    ]  # fmt: skip
    return (f"Dense perplexity {dense:.2f}; {results['calibration_windows']} calibration windows of 512 tokens.\n\n"
            + markdown_table(header, body))  # fmt: skip


if __name__ == "__main__":
    main()
