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

Run: python bench/ordering.py [--seeds 1 2 3] [--target unstructured] [--task mrpc]
  -> bench/results/ordering{,-unstructured}{,-mrpc}.{json,md,png}
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from prunekit.io import write_json_atomic

HERE = Path(__file__).resolve().parent
GLUE = HERE.parent.parent / "shared" / "data" / "glue"
TASKS = {"sst2": "SST-2", "mrpc": "MRPC"}  # --task -> GLUE folder
FLAGS = ["--max-length", "64", "--max-train-samples", "4800", "--stage-steps", "150"]
TARGETS = {"structured": ["--heads", "0.5", "--ffn", "0.5"], "unstructured": ["--sparsity", "0.7"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", default=["1", "2", "3"])
    parser.add_argument("--target", choices=sorted(TARGETS), default="structured")
    parser.add_argument("--task", choices=sorted(TASKS), default="sst2")
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "prunekit-bench-ordering"))
    args = parser.parse_args()
    suffix = "".join(f"-{part}" for part in (args.target, args.task) if part not in ("structured", "sst2"))
    name, out = f"ordering{suffix}", Path(args.work) / f"study{suffix}"
    data = GLUE / TASKS[args.task]
    command = ["prunekit", "study", "ordering", "--out", str(out), "--data", str(data), *FLAGS,
               *TARGETS[args.target], "--seeds", *args.seeds]  # fmt: skip
    # --resume: a killed run continues after its last finished stage
    subprocess.run([sys.executable, "-m", *command, "--resume"], check=True)
    results = HERE / "results"
    summary = json.loads((out / "summary.json").read_text())
    # recorded with paths as seen from the repository root, not this machine's
    shown = " ".join(command).replace(str(out), f"$TMPDIR/prunekit-bench-ordering/{out.name}")
    shown = shown.replace(str(data), f"../shared/data/glue/{TASKS[args.task]}")
    write_json_atomic(results / f"{name}.json", {"command": shown, **summary})
    header = f"Command: `{shown}`\n\n"
    (results / f"{name}.md").write_text(header + (out / "study.md").read_text(), encoding="utf-8")
    shutil.copyfile(out / "ordering.png", results / f"{name}.png")


if __name__ == "__main__":
    main()
