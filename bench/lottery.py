"""Lottery tickets on the real model: ticket vs random-mask and one-shot controls, round by round.

all-MiniLM-L6-v2 on GLUE SST-2: 4,000 training sentences (seeded subset; one pass per training,
batch 32, lr 5e-5, max length 64) so the whole run fits in about 30 minutes on 2 cores; dev: all
872 sentences. Four rounds pruning 30 % of the remaining attention/FFN weights each (global
magnitude), rewinding to the pretrained weights θ0 (Chen et al. 2020): 30 / 51 / 66 / 76 % sparse.
Every round trains three models from the same budget: the ticket, a random mask with the ticket's
per-matrix sparsity (rewound the same way), and one-shot magnitude pruning of the dense trained
model + fine-tuning (no rewinding). The run goes through the real command, ``prunekit lottery``.

Run: python bench/lottery.py  (writes bench/results/lottery.{json,md,png})
Late rewinding: python bench/lottery.py --rewind step:20 --name lottery-rewind-step20
Layer-wise ranking: python bench/lottery.py --scope layer --name lottery-layer
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from prunekit.cli import main as prunekit
from prunekit.io import write_json_atomic

HERE = Path(__file__).resolve().parent
SST2 = HERE.parent.parent / "shared" / "data" / "glue" / "SST-2"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train-samples", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--prune-per-round", type=float, default=0.3)
    parser.add_argument("--rewind", default="init", help="init (θ0) or step:K")
    parser.add_argument("--scope", default="global", choices=["global", "layer"], help="magnitude ranking scope")
    parser.add_argument("--seed", type=int, default=42, help="subset, initialisation and data-order seed")
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--name", default="lottery", help="result files: <out>/<name>.json, .md and .png")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="prunekit-bench-lottery-")) / "run"
    command = (
        f"lottery --model minilm --data {SST2} --max-train-samples {args.train_samples} --max-length 64 "
        f"--rounds {args.rounds} --prune-per-round {args.prune_per_round} --rewind {args.rewind} "
        f"--scope {args.scope} --seed {args.seed} --out {work}"
    )
    start = time.perf_counter()
    if prunekit(command.split()) != 0:
        raise SystemExit("prunekit lottery failed")
    minutes = round((time.perf_counter() - start) / 60, 1)
    write_results(work, command, minutes, Path(args.out), args.name)


def write_results(work: Path, command: str, minutes: float, out: Path, name: str) -> None:
    """JSON, markdown table and plot of the finished run in ``work``."""
    summary = json.loads((work / "summary.json").read_text())
    results = {
        "benchmark": "lottery",
        "command": " ".join(["python", "bench/lottery.py", *sys.argv[1:]]),
        "prunekit_command": "prunekit "
        + command.replace(str(SST2), "../shared/data/glue/SST-2").replace(str(work), "RUN_DIR"),
        "wall_minutes": minutes,
        **{key: summary[key] for key in ("main_metric", "dense", "rounds", "winning_ticket", "config", "train")},
    }
    write_json_atomic(out / f"{name}.json", results)
    shutil.copyfile(work / "lottery.png", out / f"{name}.png")
    rewind = summary["config"]["rewind"]
    rewound_to = "θ0" if rewind == "init" else f"θ{rewind.split(':')[1]}"
    dense = summary["dense"]
    rows = [
        f"Dense (round 0): {dense:.4f} accuracy. Each row: three models trained with the same budget "
        f"({summary['train']['samples']} sentences, one pass); {summary['config']['scope']} magnitude ranking. "
        f"Wall time {minutes} min.",
        "",
        f"| round | sparsity | ticket (rewound to {rewound_to}) | random mask (rewound) | one-shot + fine-tune "
        "| ticket − dense |",
        "|---|---|---|---|---|---|",
    ]
    for r in summary["rounds"][1:]:
        rows.append(
            f"| {r['round']} | {100 * r['sparsity']:.1f} % | {r['ticket']:.4f} | {r['random_mask']:.4f} | "
            f"{r['one_shot']:.4f} | {100 * (r['ticket'] - dense):+.1f} pt |"
        )
    ticket = summary["winning_ticket"]
    rows += [
        "",
        f"Winning ticket (within 1 point of dense): round {ticket['round']}, {100 * ticket['sparsity']:.1f} % sparse."
        if ticket
        else "No round within 1 point of dense.",
    ]
    (out / f"{name}.md").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
