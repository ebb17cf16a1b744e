"""LoRA vs full fine-tuning on the real model, through the CLI: accuracy, trainable parameters, peak
training memory, time; and LoRA on a 70 %-sparse model (zeros kept, metric before = after merge).

all-MiniLM-L6-v2 on 8,000 SST-2 training sentences (seeded subset), one pass, batch 32, max length
64; dev: all 872 sentences. Each arm is a separate `prunekit finetune` process, so its peak RSS
(`train.peak_rss_mb`, the process's high-water mark: model, data and training) is its own; arms run
one after another. Full fine-tuning uses prunekit's default lr 5e-5; LoRA (r 8, alpha 16, every
attention and FFN projection, head trained in full) uses 5e-4, the usual order of magnitude higher
for adapters. The sparse arm prunes MiniLM to 70 % (global magnitude, pretrained weights) and trains
LoRA on it. ≈ 15 min on 2 cores for the default seeds.

Run: python bench/lora.py [--seeds 42 43] -> bench/results/lora.{json,md}
"""

from __future__ import annotations

import argparse
import json
import statistics

from harness import SST2, markdown_table, mean_std, trained, write_results

COMMON = ["--data", SST2, "--max-train-samples", "8000", "--max-length", "64", "--batch-size", "32"]
COMMON += ["--epochs", "1"]  # one pass for every arm
ARMS = {
    "full": ["--lr", "5e-5"],
    "lora": ["--lora", "--lora-r", "8", "--lr", "5e-4"],
    "lora-on-70%-sparse": ["--lora", "--lora-r", "8", "--lr", "5e-4"],
}


def run_arm(name: str, seed: int) -> dict:
    model = trained("prune", "magnitude", "--model", "minilm", "--sparsity", "0.7")[0] if "sparse" in name else "minilm"
    _, summary = trained("finetune", "--model", model, "--seed", str(seed), *COMMON, *ARMS[name])
    train = summary["train"]
    arm = {
        "arm": name,
        "seed": seed,
        "accuracy": summary["metrics"]["accuracy"],
        "trainable_params": train["trainable_params"],
        "params_total": summary["params_total"],
        "peak_rss_mb": train["peak_rss_mb"],
        "train_runtime_s": train["runtime_s"],
        "steps": train["steps"],
        "lr": train["lr"],
    }
    if "lora" in summary:
        arm["accuracy_before_merge"] = summary["lora"]["metrics_before_merge"]["accuracy"]
    if "sparsity" in summary:
        arm["sparsity"] = summary["sparsity"]
    return arm


def table(results: dict) -> str:
    arms = results["arms"]
    full_rss = statistics.mean(a["peak_rss_mb"] for a in arms if a["arm"] == "full")
    header = ["arm", "seeds", "accuracy (mean ± std)", "before merge", "trainable params", "peak RSS (MiB)",
              "vs full", "train time (s)"]  # fmt: skip
    body = []
    for name in ARMS:
        group = [a for a in arms if a["arm"] == name]
        before = [a["accuracy_before_merge"] for a in group if "accuracy_before_merge" in a]
        rss = statistics.mean(a["peak_rss_mb"] for a in group)
        body.append([
            name, ", ".join(str(a["seed"]) for a in group), mean_std([a["accuracy"] for a in group]),
            f"{statistics.mean(before):.4f}" if before else "—",
            f"{group[0]['trainable_params']:,} of {group[0]['params_total']:,}", f"{rss:.0f}",
            f"{rss / full_rss:.2f}×", f"{statistics.mean(a['train_runtime_s'] for a in group):.0f}",
        ])  # fmt: skip
    return markdown_table(header, body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43])
    args = parser.parse_args()
    results = {"arms": []}
    for seed in args.seeds:
        for name in ARMS:
            results["arms"].append(run_arm(name, seed))
            print(json.dumps(results["arms"][-1]), flush=True)
    write_results("lora", results, table(results))
    print(table(results))


if __name__ == "__main__":
    main()
