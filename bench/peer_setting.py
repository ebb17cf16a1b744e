"""Structured pruning in the peers' setting: one-shot Taylor (calibration draws, iterations) vs adaptive.

The workload the tracker compares prunekit with TextPruner on: all-MiniLM-L6-v2 fine-tuned on 12,000
SST-2 sentences (one pass, lr 5e-5, batch 32, max length 64); pruned one-shot; recovery = one pass
over 2,000 *further* sentences at lr 5e-5; dev: all 872 sentences; latency at batch 32 x 64, every
seed's pruned models timed together with the dense parent, interleaved in one process.
Per calibration seed (the draw of calibration sentences from the 12,000 and the recovery run's seed):
- `prune structured` (Taylor, same widths in every layer) to 6 heads / FFN 768 with 256 calibration
  sentences, and to 4 heads / FFN 384 with 256 and 512 sentences, one-shot and in 4 iterations;
- adaptive pruning (`finetune --prune adaptive`, default settings: global allocation from the scores,
  FFN widths multiples of 32) to the same 4 heads / FFN 384 budget *during* the recovery pass, the
  same with every layer at the same width (`--scope layer`), and with `--latency-aware` widths (per
  layer, within the measured latency of the uniform widths, timed at batch 32 x 64).
The dense control is the parent trained the same recovery pass. ~45 min on 2 cores for 3 seeds.

Run: python bench/peer_setting.py [--seeds 1 2 3] -> bench/results/peer-setting.{json,md}
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from pathlib import Path

from harness import SST2, markdown_table, mean_std, time_together, trained, work_dir, write_results

TRAIN_SIZE, RECOVERY_SIZE = 12_000, 2_000
COMMON = ["--data", SST2, "--max-length", "64"]
PASS = ["--epochs", "1", "--lr", "5e-5", "--warmup-ratio", "0", "--batch-size", "32"]
SMALL = ["--heads", "0.33334", "--ffn", "0.25"]  # 4 of 12 heads, 384 of 1,536 neurons
ONE_SHOT = {  # arm -> prune structured flags (Taylor importance, the same widths in every layer)
    "6 heads / FFN 768, 256 calibration": ["--heads", "0.5", "--ffn", "0.5", "--calibration-samples", "256"],
    "4 heads / FFN 384, 256 calibration": [*SMALL, "--calibration-samples", "256"],
    "4 heads / FFN 384, 512 calibration": [*SMALL, "--calibration-samples", "512"],
    "4 heads / FFN 384, 512 calibration, 4 iterations": [*SMALL, "--calibration-samples", "512", "--iterations", "4"],
}
ADAPTIVE = {
    "adaptive 4 heads / FFN 384 (defaults: global allocation)": [],
    "adaptive 4 heads / FFN 384, same width every layer": ["--scope", "layer"],
    "adaptive 4 heads / FFN 384, --latency-aware": ["--latency-aware"],
}


def split_training_data(work: Path) -> tuple[Path, Path]:
    """12,000 fine-tuning sentences and 2,000 further recovery sentences, drawn once (seed 0)."""
    lines = (SST2 / "train.tsv").read_text(encoding="utf-8").splitlines()
    header, rows = lines[0], lines[1:]
    drawn = random.Random(0).sample(range(len(rows)), TRAIN_SIZE + RECOVERY_SIZE)
    files = work / "train-12k.tsv", work / "recovery-2k.tsv"
    for path, part in zip(files, (drawn[:TRAIN_SIZE], drawn[TRAIN_SIZE:])):
        path.write_text("\n".join([header, *(rows[i] for i in sorted(part))]) + "\n", encoding="utf-8")
    return files


def time_seed(rows: list[dict], parent: Path) -> None:
    """Every pruned model of one seed timed with the dense parent, interleaved (batch 32 x 64, 20 rounds)."""
    pruned = [r for r in rows if r["folder"] is not None]
    for r, ratio in zip(pruned, time_together(parent, [r["folder"] for r in pruned])):
        r["speedup_vs_parent"] = ratio
    for r in rows:
        del r["folder"]


def row(arm: str, seed: int, summary: dict, folder: Path | None, after_pruning: float | None = None) -> dict:
    return {
        "arm": arm,
        "seed": seed,
        "accuracy": summary["metrics"]["accuracy"],
        "accuracy_after_pruning": after_pruning,
        "params_total": summary["params_total"],
        "folder": folder,
    }


def run_seed(seed: int, parent: Path, train: Path, recovery: Path) -> list[dict]:
    recover = [*COMMON, "--train", recovery, *PASS, "--seed", str(seed)]
    _, control = trained("finetune", "--model", parent, *recover)
    rows = [row("dense control (parent + the recovery pass)", seed, control, None)]
    for arm, flags in ONE_SHOT.items():
        calibration = [*COMMON, "--train", train, "--calibration-seed", str(seed)]
        pruned, prune = trained("prune", "structured", "--model", parent, "--scope", "uniform", *flags, *calibration)
        out, summary = trained("finetune", "--model", pruned, *recover)
        rows.append(row(arm, seed, summary, out, prune["metrics"]["accuracy"]))
    for arm, flags in ADAPTIVE.items():
        out, summary = trained("finetune", "--model", parent, *recover, "--prune", "adaptive", *SMALL, *flags)
        rows.append(row(arm, seed, summary, out))
    time_seed(rows, parent)
    return rows


def table(results: dict) -> str:
    arms, parent = results["arms"], results["parent_accuracy"]
    control = statistics.mean(a["accuracy"] for a in arms if a["arm"].startswith("dense control"))
    header = ["arm", "acc. after pruning", "accuracy (mean ± std)", "% of parent", "% of control", "speed-up b32×64"]
    body = []
    for name in dict.fromkeys(a["arm"] for a in arms):
        group = [a for a in arms if a["arm"] == name]
        mean = statistics.mean(a["accuracy"] for a in group)
        before = [a["accuracy_after_pruning"] for a in group if a["accuracy_after_pruning"] is not None]
        speed = [a["speedup_vs_parent"] for a in group if "speedup_vs_parent" in a]
        body.append([
            name, f"{statistics.mean(before):.4f}" if before else "—", mean_std([a["accuracy"] for a in group]),
            f"{100 * mean / parent:.1f} %", f"{100 * mean / control:.1f} %",
            f"{statistics.mean(speed):.2f}×" if speed else "1×",
        ])  # fmt: skip
    intro = f"Dense parent accuracy {parent:.4f}; dense control {control:.4f}. Seeds: {results['seeds']}."
    return f"{intro}\n\n{markdown_table(header, body)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args()
    train, recovery = split_training_data(work_dir("peer-setting"))
    parent, parent_summary = trained("finetune", "--model", "minilm", *COMMON, "--train", train, *PASS, "--seed", "0")
    results = {
        "seeds": args.seeds,
        "parent_accuracy": parent_summary["metrics"]["accuracy"],
        "parent_params": parent_summary["params_total"],
        "arms": [],
    }
    for seed in args.seeds:
        results["arms"] += run_seed(seed, parent, train, recovery)
        print(json.dumps(results["arms"][-1]), flush=True)
        write_results("peer-setting", results, table(results))
    print(table(results))


if __name__ == "__main__":
    main()
