"""Ordering study: LoRA → prune vs prune → LoRA vs joint (adaptive pruning during LoRA), same target,
same total steps, 3 seeds, against the equal-budget dense control — through `prunekit study ordering`.

all-MiniLM-L6-v2 on a seeded 4,800-sentence SST-2 subset (150 optimizer steps a pass at batch 32),
max length 64; every run trains three stages of 150 steps (450 in all: LoRA stages at lr 5e-4, full
fine-tuning at 1e-4, 10 % warm-up); target: half the heads and half the FFN neurons (FFN widths
multiples of 32, allocation across layers from the scores); dev: all 872 sentences. Speed-ups are
latency ratios vs the dense model, timed interleaved in one process (batch 32 × 128 and 1 × 128).
≈ 25 min a seed on 2 cores. `--target unstructured`: 70 % of the layers' weights zeroed by magnitude
instead (the joint order prunes gradually while training every weight; masks held through LoRA).
`--task mrpc`: the same on MRPC (all 3,668 training pairs; dev: 408 pairs, metric F1).
`--task brown`: the decoder, SmolLM2-135M on the Brown corpus, 50 % of the layers' weights zeroed by
magnitude (always unstructured), stages of 10 steps at batch 4 × 128 tokens (30 steps, 15k training
tokens a run: a small budget, sized to ~15 min a seed on 2 cores), perplexity on the first 16,384 dev
tokens.

Run: python bench/ordering.py [--seeds 1 2 3] [--target unstructured] [--task mrpc|brown]
  -> bench/results/ordering{,-unstructured}{,-mrpc,-brown}.{json,md,png}
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys

from harness import BROWN, GLUE, RESULTS, shown, work_dir, write_results

DATA = {"sst2": GLUE / "SST-2", "mrpc": GLUE / "MRPC", "brown": BROWN}  # --task -> data folder
FLAGS = ["--max-length", "64", "--max-train-samples", "4800", "--stage-steps", "150"]
DECODER = ["--model", "smollm2", "--max-length", "128", "--batch-size", "4", "--stage-steps", "10",
           "--max-eval-tokens", "16384", "--sparsity", "0.5"]  # fmt: skip
TARGETS = {"structured": ["--heads", "0.5", "--ffn", "0.5"], "unstructured": ["--sparsity", "0.7"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", default=["1", "2", "3"])
    parser.add_argument("--target", choices=sorted(TARGETS), default="structured")
    parser.add_argument("--task", choices=sorted(DATA), default="sst2")
    args = parser.parse_args()
    decoder = args.task == "brown"
    parts = (args.task,) if decoder else (args.target, args.task)
    suffix = "".join(f"-{part}" for part in parts if part not in ("structured", "sst2"))
    name, out = f"ordering{suffix}", work_dir("ordering") / f"study{suffix}"
    settings = DECODER if decoder else [*FLAGS, *TARGETS[args.target]]
    command = ["study", "ordering", "--out", str(out), "--data", str(DATA[args.task]), *settings,
               "--seeds", *args.seeds]  # fmt: skip
    # --resume: a killed run continues after its last finished stage
    subprocess.run([sys.executable, "-m", "prunekit", *command, "--resume"], check=True)
    summary = json.loads((out / "summary.json").read_text())
    # recorded with paths as seen from the repository root, not this machine's
    write_results(name, {**summary, "command": shown(command, out)}, (out / "study.md").read_text())
    shutil.copyfile(out / "ordering.png", RESULTS / f"{name}.png")


if __name__ == "__main__":
    main()
