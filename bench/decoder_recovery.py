"""Masked LoRA recovery of one-shot sparse SmolLM2-135M: the built-in recipes sparsegpt-lora, wanda-lora
and sparsegpt-2of4-lora, each run as a user would (`prunekit run RECIPE --model smollm2 --data brown`)
with its default budget.

Each recipe evaluates the dense model, prunes (64 calibration windows of 512 tokens), then trains LoRA
(r 8 on every projection, lr 5e-4, batch 4 × 512 tokens, 40 steps = 82k tokens) with the zeros held and
merges it; perplexity on the first 16,384 tokens of brown/dev.txt for all three. Reported: perplexity
as × dense after pruning and after recovery, the sparsity kept, and every stage's time.

Run: python bench/decoder_recovery.py [--recipes sparsegpt-lora ...]
  -> bench/results/decoder-recovery.{json,md}  (~20 min a recipe on 2 cores)
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from harness import BROWN, markdown_table, work_dir, write_results

from prunekit.io import read_json

RECIPES = ("sparsegpt-lora", "wanda-lora", "sparsegpt-2of4-lora")


def run_recipe(name: str) -> dict:
    out = work_dir("decoder-recovery") / name
    if not (out / "run.json").is_file() or not (out / "03-recover" / "stage.json").is_file():
        command = [sys.executable, "-m", "prunekit", "run", name, "--model", "smollm2", "--data", str(BROWN),
                   "--out", str(out), "--overwrite"]  # fmt: skip
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    stages = {
        folder: read_json(out / folder / "summary.json", folder) for folder in ("01-dense", "02-prune", "03-recover")
    }
    seconds = {folder: read_json(out / folder / "stage.json", folder).get("seconds") for folder in stages}
    dense = stages["01-dense"]["metrics"]["perplexity"]
    recovered = stages["03-recover"]
    return {
        "recipe": name,
        "dense": dense,
        "pruned": stages["02-prune"]["metrics"]["perplexity"],
        "recovered": recovered["metrics"]["perplexity"],
        "before_merge": recovered["lora"]["metrics_before_merge"]["perplexity"],
        "sparsity": recovered["sparsity"],
        "steps": recovered["train"]["steps"],
        "tokens": recovered["train"]["steps"] * recovered["train"]["batch_size"] * recovered["train"]["max_length"],
        "training_peak_rss_mb": (recovered["train"].get("training_memory") or {}).get("peak_rss_mb"),
        "seconds": seconds,
    }


def table(rows: list[dict]) -> str:
    header = ["recipe", "dense", "pruned", "× dense", "recovered", "× dense", "sparsity", "tokens",
              "prune / recover / total min"]  # fmt: skip
    body = [
        [r["recipe"], f"{r['dense']:.2f}", f"{r['pruned']:.2f}", f"{r['pruned'] / r['dense']:.3f}",
         f"{r['recovered']:.2f}", f"{r['recovered'] / r['dense']:.3f}", f"{r['sparsity']:.3f}", f"{r['tokens']:,}",
         f"{r['seconds']['02-prune'] / 60:.1f} / {r['seconds']['03-recover'] / 60:.1f} / "
         f"{sum(r['seconds'].values()) / 60:.1f}"]
        for r in rows
    ]  # fmt: skip
    return markdown_table(header, body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", choices=RECIPES, default=list(RECIPES))
    args = parser.parse_args()
    rows = []
    for name in args.recipes:
        rows.append(run_recipe(name))
        write_results("decoder-recovery", {"recipes": rows}, table(rows))
    print(table(rows))


if __name__ == "__main__":
    main()
