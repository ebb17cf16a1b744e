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
import subprocess
import sys
import tempfile
from pathlib import Path

from prunekit.io import write_json_atomic

HERE = Path(__file__).resolve().parent
SST2 = HERE.parent.parent / "shared" / "data" / "glue" / "SST-2"
COMMON = ["--data", str(SST2), "--max-train-samples", "8000", "--max-length", "64", "--batch-size", "32"]
COMMON += ["--epochs", "1"]  # one pass for every arm
ARMS = {
    "full": ["--lr", "5e-5"],
    "lora": ["--lora", "--lora-r", "8", "--lr", "5e-4"],
    "lora-on-70%-sparse": ["--lora", "--lora-r", "8", "--lr", "5e-4"],
}


def prunekit(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "prunekit", *args], check=True, stdout=subprocess.DEVNULL)


def run_arm(name: str, seed: int, work: Path) -> dict:
    model = "minilm"
    if "sparse" in name:
        model = str(work / "sparse70")
        if not Path(model).is_dir():
            prunekit("prune", "magnitude", "--model", "minilm", "--sparsity", "0.7", "--out", model)
    out = work / f"{name}-{seed}"
    prunekit("finetune", "--model", model, "--out", str(out), "--seed", str(seed), *COMMON, *ARMS[name])
    summary = json.loads((out / "summary.json").read_text())
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


def write_table(results: dict, out: Path) -> None:
    arms = results["arms"]
    full_rss = statistics.mean(a["peak_rss_mb"] for a in arms if a["arm"] == "full")
    rows = [
        "| arm | seeds | accuracy (mean ± std) | before merge | trainable params | peak RSS (MiB) | vs full | "
        "train time (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in ARMS:
        group = [a for a in arms if a["arm"] == name]
        accuracy = [a["accuracy"] for a in group]
        spread = statistics.stdev(accuracy) if len(accuracy) > 1 else 0.0
        before = [a["accuracy_before_merge"] for a in group if "accuracy_before_merge" in a]
        rss = statistics.mean(a["peak_rss_mb"] for a in group)
        rows.append(
            f"| {name} | {', '.join(str(a['seed']) for a in group)} | {statistics.mean(accuracy):.4f} ± {spread:.4f} "
            f"| {f'{statistics.mean(before):.4f}' if before else '—'} | {group[0]['trainable_params']:,} "
            f"of {group[0]['params_total']:,} | {rss:.0f} | {rss / full_rss:.2f}× "
            f"| {statistics.mean(a['train_runtime_s'] for a in group):.0f} |"
        )
    (out / "lora.md").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43])
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args()
    results = {"benchmark": "lora", "command": " ".join(sys.argv), "arms": []}
    with tempfile.TemporaryDirectory(prefix="prunekit-bench-lora-") as work:
        for seed in args.seeds:
            for name in ARMS:
                results["arms"].append(run_arm(name, seed, Path(work)))
                print(json.dumps(results["arms"][-1]), flush=True)
    out = Path(args.out)
    write_json_atomic(out / "lora.json", results)
    write_table(results, out)


if __name__ == "__main__":
    main()
