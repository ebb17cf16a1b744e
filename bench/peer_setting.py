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
import sys
import tempfile
from pathlib import Path

from harness import prunekit, time_together

from prunekit.io import write_json_atomic

HERE = Path(__file__).resolve().parent
SST2 = HERE.parent.parent / "shared" / "data" / "glue" / "SST-2"
TRAIN_SIZE, RECOVERY_SIZE = 12_000, 2_000
COMMON = ["--data", str(SST2), "--max-length", "64"]
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


def time_seed(rows: list[dict], parent: Path, work: Path) -> None:
    """Every pruned model of one seed timed with the dense parent, interleaved (batch 32 x 64, 20 rounds)."""
    pruned = [r for r in rows if r["folder"] is not None]
    for r, ratio in zip(pruned, time_together(parent, [work / r["folder"] for r in pruned])):
        r["speedup_vs_parent"] = ratio


def row(arm: str, seed: int, summary: dict, folder: Path | None, after_pruning: float | None = None) -> dict:
    return {
        "arm": arm,
        "seed": seed,
        "accuracy": summary["metrics"]["accuracy"],
        "accuracy_after_pruning": after_pruning,
        "params_total": summary["params_total"],
        "folder": folder.name if folder else None,  # in the work folder
    }


def run_seed(seed: int, parent: Path, recovery: Path, work: Path) -> list[dict]:
    recover = [*COMMON, "--train", str(recovery), *PASS, "--seed", str(seed)]
    control = prunekit("finetune", "--model", str(parent), "--out", str(work / f"control-{seed}"), *recover)
    rows = [row("dense control (parent + the recovery pass)", seed, control, None)]
    for arm, flags in ONE_SHOT.items():
        tag = f"{len(rows)}-{seed}"
        pruned = work / f"oneshot-{tag}"
        calibration = [*COMMON, "--train", str(work / "train-12k.tsv"), "--calibration-seed", str(seed)]
        prune = prunekit("prune", "structured", "--model", str(parent), "--out", str(pruned), "--scope", "uniform",
                         *flags, *calibration)  # fmt: skip
        out = work / f"recovered-{tag}"
        rows.append(row(arm, seed, prunekit("finetune", "--model", str(pruned), "--out", str(out), *recover),
                        out, prune["metrics"]["accuracy"]))  # fmt: skip
    for arm, flags in ADAPTIVE.items():
        out = work / f"adaptive-{len(rows)}-{seed}"
        rows.append(row(arm, seed, prunekit("finetune", "--model", str(parent), "--out", str(out), *recover,
                                            "--prune", "adaptive", *SMALL, *flags), out))  # fmt: skip
    time_seed(rows, parent, work)
    return rows


def write_table(results: dict, out: Path) -> str:
    arms, parent = results["arms"], results["parent_accuracy"]
    control = statistics.mean(a["accuracy"] for a in arms if a["arm"].startswith("dense control"))
    lines = [
        f"Dense parent accuracy {parent:.4f}; dense control {control:.4f}. Seeds: {results['seeds']}.",
        "",
        "| arm | acc. after pruning | accuracy (mean ± std) | % of parent | % of control | speed-up b32×64 |",
        "|---|---|---|---|---|---|",
    ]
    for name in dict.fromkeys(a["arm"] for a in arms):
        group = [a for a in arms if a["arm"] == name]
        accuracy = [a["accuracy"] for a in group]
        mean, std = statistics.mean(accuracy), statistics.stdev(accuracy) if len(accuracy) > 1 else 0.0
        before = [a["accuracy_after_pruning"] for a in group if a["accuracy_after_pruning"] is not None]
        speed = [a["speedup_vs_parent"] for a in group if "speedup_vs_parent" in a]
        lines.append(
            f"| {name} | {f'{statistics.mean(before):.4f}' if before else '—'} | {mean:.4f} ± {std:.4f} "
            f"| {100 * mean / parent:.1f} % | {100 * mean / control:.1f} % "
            f"| {f'{statistics.mean(speed):.2f}×' if speed else '1×'} |"
        )
    text = "\n".join(lines) + "\n"
    (out / "peer-setting.md").write_text(f"Command: `{results['command']}`\n\n{text}", encoding="utf-8")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument(
        "--work",
        default=str(Path(tempfile.gettempdir()) / "prunekit-bench-peer-setting"),
        help="model folders; kept, so an interrupted run resumes (delete it to start over)",
    )
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    train, recovery = split_training_data(work)
    parent = work / "parent"
    parent_summary = prunekit("finetune", "--model", "minilm", "--out", str(parent), *COMMON, "--train", str(train),
                              *PASS, "--seed", "0")  # fmt: skip
    results = {
        "benchmark": "peer-setting",
        "command": " ".join(["python", "bench/peer_setting.py", *sys.argv[1:]]),
        "seeds": args.seeds,
        "parent_accuracy": parent_summary["metrics"]["accuracy"],
        "parent_params": parent_summary["params_total"],
        "arms": [],
    }
    for seed in args.seeds:
        results["arms"] += run_seed(seed, parent, recovery, work)
        print(json.dumps(results["arms"][-1]), flush=True)
    out = HERE / "results"
    write_json_atomic(out / "peer-setting.json", results)
    print(write_table(results, out))


if __name__ == "__main__":
    main()
