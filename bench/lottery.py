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
import shutil
from pathlib import Path

from harness import RESULTS, SST2, markdown_table, shown, trained, write_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train-samples", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--prune-per-round", type=float, default=0.3)
    parser.add_argument("--rewind", default="init", help="init (θ0) or step:K")
    parser.add_argument("--scope", default="global", choices=["global", "layer"], help="magnitude ranking scope")
    parser.add_argument("--seed", type=int, default=42, help="subset, initialisation and data-order seed")
    parser.add_argument("--name", default="lottery", help="result files: bench/results/NAME.json, .md and .png")
    args = parser.parse_args()
    command = ["lottery", "--model", "minilm", "--data", SST2, "--max-train-samples", str(args.train_samples),
               "--max-length", "64", "--rounds", str(args.rounds), "--prune-per-round", str(args.prune_per_round),
               "--rewind", args.rewind, "--scope", args.scope, "--seed", str(args.seed)]  # fmt: skip
    run, summary = trained(*command)
    record(run, summary, shown([*command, "--out", "DIR"]), args.name)


def record(run: Path, summary: dict, command: str, name: str) -> None:
    """JSON, markdown table and plot of the finished lottery run in ``run``."""
    minutes = round(summary["search_seconds"] / 60, 1)
    results = {
        "prunekit_command": command,
        "wall_minutes": minutes,
        **{key: summary[key] for key in ("main_metric", "dense", "rounds", "winning_ticket", "config", "train")},
    }
    rewind = summary["config"]["rewind"]
    rewound_to = "θ0" if rewind == "init" else f"θ{rewind.split(':')[1]}"
    dense = summary["dense"]
    header = ["round", "sparsity", f"ticket (rewound to {rewound_to})", "random mask (rewound)",
              "one-shot + fine-tune", "ticket − dense"]  # fmt: skip
    body = [
        [str(r["round"]), f"{100 * r['sparsity']:.1f} %", f"{r['ticket']:.4f}", f"{r['random_mask']:.4f}",
         f"{r['one_shot']:.4f}", f"{100 * (r['ticket'] - dense):+.1f} pt"]
        for r in summary["rounds"][1:]
    ]  # fmt: skip
    ticket = summary["winning_ticket"]
    text = "\n\n".join([
        f"Dense (round 0): {dense:.4f} accuracy. Each row: three models trained with the same budget "
        f"({summary['train']['samples']} sentences, one pass); {summary['config']['scope']} magnitude ranking. "
        f"Wall time {minutes} min.",
        markdown_table(header, body),
        f"Winning ticket (within 1 point of dense): round {ticket['round']}, {100 * ticket['sparsity']:.1f} % sparse."
        if ticket else "No round within 1 point of dense.",
    ])  # fmt: skip
    write_results(name, results, text)
    shutil.copyfile(run / "lottery.png", RESULTS / f"{name}.png")
    print(text)


if __name__ == "__main__":
    main()
