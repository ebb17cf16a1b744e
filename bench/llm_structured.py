"""Structured pruning of SmolLM2-135M by a quarter of its non-embedding parameters, with recovery training.

Model: `--model smollm2` (30 layers, 106.2M non-embedding parameters, tied 28.3M embedding). Two ways to
remove ~25 % of the non-embedding parameters, each scored on 32 calibration windows of 256 tokens from
brown/train.txt (seed 0):
- depth: drop 8 of 30 layers (26.7 %), chosen by block influence (ShortGPT: 1 - cos(input, output));
- width: every layer's FFN 1536 -> 1024 neurons (25.0 %), Taylor scores of the language-modelling loss;
- width-reconstruct: the same, each layer's down projection then refit by least squares on the
  calibration activations, layer by layer (`--reconstruct`; issue #27 item 1).
Recovery: `finetune` of every weight on packed 256-token blocks of brown/train.txt (`--max-train-samples`
blocks, batch 8, lr 1e-4, 10 % warm-up, one pass; the step count and wall time are in the results).
`--kd A` adds, per arm, the same recovery distilled from the dense model (`--distill-from smollm2
--alpha-kd A --temperature 1`: per-token KL to the dense model's next-token distribution, weight A,
plus 1 - A of the language-modelling loss).
The equal-budget dense control is the dense model trained the same steps on the same blocks.
Evaluation: perplexity on the first 16,384 tokens of brown/dev.txt in 512-token windows; generation speed
with `bench --generate --vs` (prompt 128, 64 new tokens, batch 1, interleaved with the dense model).

Run: python bench/llm_structured.py [--train-blocks 480] [--arms depth width] [--kd 0.5] [--name NAME]
  -> bench/results/NAME.{json,md} (default llm-structured; ~60 min at 480 blocks, both arms, no KD)
"""

from __future__ import annotations

import argparse

from harness import BROWN, markdown_table, measured, prunekit, trained, write_results

EVAL = ["--data", BROWN, "--max-length", "512", "--max-eval-tokens", "16384"]
CALIBRATION = ["--calibration-samples", "32", "--calibration-length", "256", "--calibration-seed", "0"]
ARMS = {  # --arms name -> (row label, prune structured flags)
    "depth": ("depth: 22 of 30 layers (block influence)", ["--layers", "22", "--layer-importance", "block-influence"]),
    "width": ("width: FFN 1024 of 1536 (Taylor)", ["--ffn", "0.6667", "--scope", "uniform", "--round-to", "32"]),
    "width-reconstruct": ("width: FFN 1024 of 1536 (Taylor) with --reconstruct",
                          ["--ffn", "0.6667", "--scope", "uniform", "--round-to", "32", "--reconstruct"]),
}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-blocks", type=int, default=480, help="256-token training blocks (batch 8)")
    parser.add_argument("--arms", nargs="+", choices=sorted(ARMS), default=["depth", "width"])
    parser.add_argument("--kd", type=float, help="also recover each arm distilled from the dense model, this weight")
    parser.add_argument("--name", default="llm-structured", help="results file name in bench/results/")
    args = parser.parse_args()
    train = ["--data", BROWN, "--max-length", "256", "--max-train-samples", str(args.train_blocks),
             "--epochs", "1", "--batch-size", "8", "--lr", "1e-4", "--warmup-ratio", "0.1", "--seed", "0"]  # fmt: skip
    recoveries = {"": []}
    if args.kd is not None:
        kd = ["--distill-from", "smollm2", "--alpha-kd", str(args.kd), "--temperature", "1"]
        recoveries[f" + KD {args.kd:g}"] = kd
    results = {"train_blocks": args.train_blocks, "arms": []}
    dense_eval = measured("evaluate", "--model", "smollm2", *EVAL)
    dense_path = dense_eval["model_path"]
    results["arms"].append(_row("dense", dense_eval, dense_eval, None, None))
    control_folder, control = trained("finetune", "--model", "smollm2", *train)
    control_eval = measured("evaluate", "--model", control_folder, *EVAL)
    results["arms"].append(_row("dense control (same training)", control_eval, dense_eval, control, None))
    for tag in args.arms:
        arm, flags = ARMS[tag]
        pruned_folder, pruned = trained("prune", "structured", "--model", "smollm2", *flags, *CALIBRATION, *EVAL)
        results["arms"].append(_row(f"{arm}, one-shot", pruned, dense_eval, None, None))
        for label, extra in recoveries.items():
            folder, recovered = trained("finetune", "--model", pruned_folder, *train, *extra)
            speed = prunekit("bench", "--model", folder, "--vs", dense_path, "--generate",
                             "--json", folder.parent / f"{folder.name}-generate.json")  # fmt: skip
            evaluation = measured("evaluate", "--model", folder, *EVAL)
            results["arms"].append(_row(f"{arm} + recovery{label}", evaluation, dense_eval, recovered, speed))
            write_results(args.name, results, table(results))
    print(table(results))


def _row(arm: str, evaluation: dict, dense: dict, trained: dict | None, speed: dict | None) -> dict:
    embedding = 49_152 * 576
    return {
        "arm": arm,
        "perplexity": evaluation["metrics"]["perplexity"],
        "perplexity_vs_dense": evaluation["metrics"]["perplexity"] / dense["metrics"]["perplexity"],
        "params_total": evaluation["params_total"],
        "non_embedding_kept": (evaluation["params_total"] - embedding) / (dense["params_total"] - embedding),
        "train_steps": trained["train"]["steps"] if trained else None,
        "train_seconds": trained["train"]["runtime_s"] if trained else None,
        "decode_speedup": speed["ratio_vs"] if speed else None,
        "prefill_speedup": speed["ratio_vs_prefill"] if speed else None,
        "kv_cache_bytes_per_token": speed["generate"]["kv_cache_bytes_per_token"] if speed else None,
    }


def table(results: dict) -> str:
    def fmt(value, pattern: str) -> str:
        return "—" if value is None else pattern.format(value)

    header = ["arm", "perplexity", "× dense", "non-embedding params kept", "training (steps, s)",
              "decode speed-up (batch 1)", "prefill speed-up", "KV cache (B/token)"]  # fmt: skip
    body = [
        [row["arm"], f"{row['perplexity']:.2f}", f"{row['perplexity_vs_dense']:.3f}",
         f"{row['non_embedding_kept']:.1%}",
         "—" if row["train_steps"] is None else f"{row['train_steps']}, {row['train_seconds']:.0f}",
         fmt(row["decode_speedup"], "{:.2f}×"), fmt(row["prefill_speedup"], "{:.2f}×"),
         fmt(row["kv_cache_bytes_per_token"], "{:,}")]
        for row in results["arms"]
    ]  # fmt: skip
    return markdown_table(header, body)


if __name__ == "__main__":
    main()
