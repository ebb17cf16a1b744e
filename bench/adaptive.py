"""Adaptive structured pruning vs one-shot structured pruning vs the dense control, same total steps.

all-MiniLM-L6-v2 on 8,000 SST-2 training sentences (seeded subset), batch 32, max length 64, lr 1e-4
with 10 % warm-up; every arm trains 2 passes (500 optimizer steps) in all; dev: all 872 sentences.
- dense: `prunekit finetune` for 2 passes — the equal-budget dense control;
- adaptive (global / uniform allocation): `finetune --prune adaptive --heads 0.5 --ffn 0.5` for 2
  passes from the pretrained model (schedule over the first 2/3, FFN widths multiples of 32);
- one-shot: 1 pass dense, `prune structured --heads 0.5 --ffn 0.5` (Taylor scores on 256 training
  sentences, ranked globally, widths multiples of 32), then 1 recovery pass.
Speed: `prunekit bench --vs DENSE` (batch 32 × 64, interleaved in one process) for each pruned arm.
≈ 35 min on 2 cores for one seed.

Run: python bench/adaptive.py [--seeds 42] -> bench/results/adaptive.{json,md}
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
DATA = ["--data", str(SST2), "--max-length", "64"]
TRAIN = [*DATA, "--max-train-samples", "8000", "--batch-size", "32", "--lr", "1e-4", "--warmup-ratio", "0.1"]
TARGET = ["--heads", "0.5", "--ffn", "0.5"]


def prunekit(*args: str) -> dict:
    """Run a prunekit command; the summary it wrote (``--out``'s summary.json or ``--json``).

    A model folder that already holds a summary (from an interrupted run of this bench) is reused."""
    flag = "--json" if "--json" in args else "--out"
    path = Path(args[args.index(flag) + 1])
    summary = path if flag == "--json" else path / "summary.json"
    if flag == "--json" or not summary.is_file():
        subprocess.run([sys.executable, "-m", "prunekit", *args], check=True, stdout=subprocess.DEVNULL)
    return json.loads(summary.read_text())


def run_seed(seed: int, work: Path) -> list[dict]:
    seeded = ["--seed", str(seed)]
    dense = work / f"dense-{seed}"
    folders = {"dense (control)": dense}
    summaries = {"dense (control)": prunekit("finetune", "--out", str(dense), "--epochs", "2", *TRAIN, *seeded)}
    for scope, name in (("global", "adaptive global"), ("layer", "adaptive uniform")):
        folders[name] = work / f"adaptive-{scope}-{seed}"
        adaptive = ["--prune", "adaptive", *TARGET, "--scope", scope]
        summaries[name] = prunekit("finetune", "--out", str(folders[name]), "--epochs", "2", *TRAIN, *seeded, *adaptive)
    parent, pruned = work / f"parent-{seed}", work / f"oneshot-{seed}"
    parent_steps = prunekit("finetune", "--out", str(parent), "--epochs", "1", *TRAIN, *seeded)["train"]["steps"]
    prunekit("prune", "structured", "--model", str(parent), "--out", str(pruned), *TARGET, "--round-to", "32", *DATA)
    name = "one-shot global + recovery"
    folders[name] = work / f"recovered-{seed}"
    summaries[name] = prunekit(
        "finetune", "--model", str(pruned), "--out", str(folders[name]), "--epochs", "1", *TRAIN, *seeded
    )
    rows = []
    for name, summary in summaries.items():
        row = {
            "arm": name,
            "seed": seed,
            "accuracy": summary["metrics"]["accuracy"],
            "params_total": summary["params_total"],
            "steps": summary["train"]["steps"] + (parent_steps if name.startswith("one-shot") else 0),
        }
        if name != "dense (control)":
            timing = prunekit(
                "bench",
                "--model",
                str(folders[name]),
                "--vs",
                str(dense),
                "--seq-len",
                "64",
                "--json",
                str(work / "bench.json"),
            )
            row["speedup_vs_dense"] = timing["ratio_vs"]
        rows.append(row)
    return rows


def write_table(results: dict, out: Path) -> None:
    rows = [
        "| arm | seeds | accuracy | % of dense control | params | speed-up vs dense (batch 32 × 64) | steps |",
        "|---|---|---|---|---|---|---|",
    ]
    arms = results["arms"]
    dense = statistics.mean(a["accuracy"] for a in arms if a["arm"] == "dense (control)")
    for name in dict.fromkeys(a["arm"] for a in arms):
        group = [a for a in arms if a["arm"] == name]
        accuracy = statistics.mean(a["accuracy"] for a in group)
        speed = [a["speedup_vs_dense"] for a in group if "speedup_vs_dense" in a]
        speedup = f"{statistics.mean(speed):.2f}×" if speed else "1×"
        rows.append(
            f"| {name} | {', '.join(str(a['seed']) for a in group)} | {accuracy:.4f} | {100 * accuracy / dense:.1f} % "
            f"| {group[0]['params_total']:,} | {speedup} | {group[0]['steps']} |"
        )
    (out / "adaptive.md").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument(
        "--work",
        default=str(Path(tempfile.gettempdir()) / "prunekit-bench-adaptive"),
        help="model folders; kept, so an interrupted run resumes (delete it to start over)",
    )
    args = parser.parse_args()
    results = {"benchmark": "adaptive", "command": " ".join(sys.argv), "arms": []}
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        results["arms"] += run_seed(seed, work)
        print(json.dumps(results["arms"]), flush=True)
    out = Path(args.out)
    write_json_atomic(out / "adaptive.json", results)
    write_table(results, out)


if __name__ == "__main__":
    main()
