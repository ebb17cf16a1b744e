"""How many passes and how much warm-up a small dataset needs: the measurements behind ``--epochs auto``.

all-MiniLM-L6-v2, full fine-tuning, batch 32, lr 5e-5 (prunekit's default), max length 128, on
- MRPC: all 3,667 training pairs (115 optimizer steps a pass), dev 408 pairs;
- SST-2: a seeded 2,500-sentence subset (79 steps a pass), dev 872 sentences.
Arms: the old default (1 pass, no warm-up), and 10 % warm-up with enough passes for ~300 optimizer
steps (and, on SST-2, ~600). The majority-class rate of each dev set is recorded as the floor.
One thread per run (OMP_NUM_THREADS=1; it shared the machine with another bench). ≈ 25 min for one seed.

Run: OMP_NUM_THREADS=1 python bench/defaults.py [--seeds 42] -> bench/results/defaults.{json,md}
"""

from __future__ import annotations

import argparse
import statistics
from collections import Counter
from pathlib import Path

from harness import GLUE, markdown_table, trained, write_results

TASKS = {
    "MRPC": {"data": GLUE / "MRPC", "samples": None, "arms": {"1 pass": 1, "3 passes": 3}},
    "SST-2 (2.5k)": {"data": GLUE / "SST-2", "samples": 2500, "arms": {"1 pass": 1, "4 passes": 4, "8 passes": 8}},
}


def majority_rate(dev: Path) -> float:
    lines = dev.read_text(encoding="utf-8").splitlines()
    label = lines[0].split("\t").index("label") if "label" in lines[0].split("\t") else 0
    counts = Counter(line.split("\t")[label] for line in lines[1:] if line.strip())
    return max(counts.values()) / sum(counts.values())


def finetune(task: dict, passes: int, seed: int) -> dict:
    flags = ["--data", task["data"], "--epochs", str(passes), "--seed", str(seed)]
    flags += ["--warmup-ratio", "0.1"] if passes > 1 else []
    flags += ["--max-train-samples", str(task["samples"])] if task["samples"] else []
    return trained("finetune", *flags)[1]


def table(rows: list[dict]) -> str:
    header = ["task", "arm", "train examples", "steps", "warm-up", "seeds", "main metric (mean)", "majority class"]
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["task"], row["arm"]), []).append(row)
    body = []
    for (task, arm), group in groups.items():
        first = group[0]
        mean = statistics.fmean(r["metric"] for r in group)
        body.append([task, arm, f"{first['samples']:,}", str(first["steps"]), first["warmup"],
                     ", ".join(str(r["seed"]) for r in group), f"{first['main_metric']} {mean:.4f}",
                     f"{first['majority']:.4f}"])  # fmt: skip
    return markdown_table(header, body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    args = parser.parse_args()
    rows = []
    for seed in args.seeds:
        for name, task in TASKS.items():
            for arm, passes in task["arms"].items():
                summary = finetune(task, passes, seed)
                rows.append(
                    {
                        "task": name,
                        "arm": arm,
                        "seed": seed,
                        "samples": summary["train"]["samples"],
                        "steps": summary["train"]["steps"],
                        "warmup": "10 %" if passes > 1 else "none",
                        "main_metric": summary["main_metric"],
                        "metric": summary["metrics"][summary["main_metric"]],
                        "metrics": summary["metrics"],
                        "majority": majority_rate(task["data"] / "dev.tsv"),
                    }
                )
                write_results("defaults", {"rows": rows}, table(rows))  # an interrupted run keeps what it measured


if __name__ == "__main__":
    main()
