"""Ordering study: LoRA → prune vs prune → LoRA vs joint (adaptive pruning during LoRA), same target,
same total steps, 3 seeds, against the equal-budget dense control — through `prunekit study ordering`.

all-MiniLM-L6-v2 on a seeded 4,800-sentence SST-2 subset (150 optimizer steps a pass at batch 32),
max length 64; every run trains three stages of 150 steps (450 in all: LoRA stages at lr 5e-4, full
fine-tuning at 1e-4, 10 % warm-up); target: half the heads and half the FFN neurons (FFN widths
multiples of 32, allocation across layers from the scores); dev: all 872 sentences. Speed-ups are
latency ratios vs the dense model, timed interleaved in one process (batch 32 × 128 and 1 × 128).
≈ 25 min a seed on 2 cores.

Run: python bench/ordering.py [--seeds 1 2 3] -> bench/results/ordering.{json,md,png}
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
SST2 = HERE.parent.parent / "shared" / "data" / "glue" / "SST-2"
FLAGS = [
    "--data", str(SST2), "--max-length", "64", "--max-train-samples", "4800", "--stage-steps", "150",
    "--heads", "0.5", "--ffn", "0.5",
]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", default=["1", "2", "3"])
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "prunekit-bench-ordering"))
    args = parser.parse_args()
    out = Path(args.work) / "study"
    command = ["prunekit", "study", "ordering", "--out", str(out), *FLAGS, "--seeds", *args.seeds]
    # --resume: a killed run continues after its last finished stage
    subprocess.run([sys.executable, "-m", *command, "--resume"], check=True)
    results = HERE / "results"
    summary = json.loads((out / "summary.json").read_text())
    # recorded with paths as seen from the repository root, not this machine's
    shown = " ".join(command).replace(str(out), "$TMPDIR/prunekit-bench-ordering/study")
    shown = shown.replace(str(SST2), "../shared/data/glue/SST-2")
    write_json_atomic(results / "ordering.json", {"command": shown, **summary})
    header = f"Command: `{shown}`\n\n"
    (results / "ordering.md").write_text(header + (out / "study.md").read_text(), encoding="utf-8")
    shutil.copyfile(out / "ordering.png", results / "ordering.png")


if __name__ == "__main__":
    main()
