"""Adaptive structured pruning vs one-shot structured pruning (global and uniform widths) vs the dense
control, same total steps, at one or more budgets.

all-MiniLM-L6-v2 on N SST-2 training sentences (seeded subset; default 8,000), batch 32, max length 64,
lr 1e-4 with 10 % warm-up; every arm trains 2 passes in all; dev: all 872 sentences. Per budget (the
fraction of heads and of FFN neurons kept):
- dense: `prunekit finetune` for 2 passes — the equal-budget dense control (once per seed);
- adaptive (global / uniform allocation): `finetune --prune adaptive --heads B --ffn B` for 2 passes
  from the pretrained model (schedule over the first 2/3, FFN widths multiples of 32);
- one-shot global / uniform: 1 pass dense (the parent, once per seed), `prune structured --heads B
  --ffn B` (Taylor scores on 256 training sentences, widths multiples of 32), then 1 recovery pass.
Speed: every pruned model of a seed timed with that seed's dense control, interleaved in one run (batch 32 × 64).

Run: python bench/adaptive.py [--seeds 42] [--budgets 0.5] [--train-samples 8000] [--arms ...] [--name adaptive]
  -> bench/results/NAME.{json,md}  (≈ 35 min a seed and budget at 8,000 sentences on 2 cores)
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from harness import SST2, markdown_table, mean_std, time_together, trained, write_results

DATA = ["--data", SST2, "--max-length", "64"]
CONTROL = "dense (control)"


ARMS = ("adaptive-global", "adaptive-uniform", "oneshot-global", "oneshot-uniform")


def run_seed(seed: int, budgets: list[float], train_samples: int, arms: list[str]) -> list[dict]:
    train = [*DATA, "--max-train-samples", str(train_samples), "--batch-size", "32", "--lr", "1e-4"]
    train += ["--warmup-ratio", "0.1", "--seed", str(seed)]
    dense, control = trained("finetune", "--epochs", "2", *train)
    parent, parent_summary = trained("finetune", "--epochs", "1", *train)
    parent_steps = parent_summary["train"]["steps"]
    rows = [_row(CONTROL, seed, None, control, control["train"]["steps"], None)]
    for budget in budgets:
        target = ["--heads", str(budget), "--ffn", str(budget)]
        for scope, name in (("global", "adaptive global"), ("layer", "adaptive uniform")):
            if name.replace(" ", "-") not in arms:
                continue
            adaptive = ["--prune", "adaptive", *target, "--scope", scope]
            folder, summary = trained("finetune", "--epochs", "2", *train, *adaptive)
            rows.append(_row(name, seed, budget, summary, summary["train"]["steps"], folder))
        for scope in ("global", "uniform"):
            if f"oneshot-{scope}" not in arms:
                continue
            pruned, _ = trained("prune", "structured", "--model", parent, *target, "--scope", scope, "--round-to", "32",
                                *DATA)  # fmt: skip
            folder, summary = trained("finetune", "--model", pruned, "--epochs", "1", *train)
            rows.append(_row(f"one-shot {scope} + recovery", seed, budget, summary,
                             parent_steps + summary["train"]["steps"], folder))  # fmt: skip
    pruned = [r for r in rows if r["folder"] is not None]
    for row, ratio in zip(pruned, time_together(dense, [r["folder"] for r in pruned])):
        row["speedup_vs_dense"] = ratio
    for row in rows:
        del row["folder"]
    return rows


def _row(arm: str, seed: int, budget: float | None, summary: dict, steps: int, folder: Path | None) -> dict:
    return {
        "arm": arm,
        "budget": budget,
        "seed": seed,
        "accuracy": summary["metrics"]["accuracy"],
        "params_total": summary["params_total"],
        "steps": steps,
        "speedup_vs_dense": 1.0,
        "folder": folder,
    }


def table(results: dict) -> str:
    arms = results["arms"]
    controls = {a["seed"]: a["accuracy"] for a in arms if a["arm"] == CONTROL}
    header = ["kept (heads, FFN)", "arm", "seeds", "accuracy (mean ± std)", "% of dense control", "params",
              "speed-up vs dense (batch 32 × 64)", "steps"]  # fmt: skip
    body = []
    for budget, arm in dict.fromkeys((a["budget"], a["arm"]) for a in arms):
        group = [a for a in arms if a["arm"] == arm and a["budget"] == budget]
        share = statistics.mean(a["accuracy"] / controls[a["seed"]] for a in group)
        speedup = statistics.mean(a["speedup_vs_dense"] for a in group)
        body.append([
            "—" if budget is None else f"{budget:.0%}", arm, ", ".join(str(a["seed"]) for a in group),
            mean_std([a["accuracy"] for a in group]), f"{100 * share:.1f} %", f"{group[0]['params_total']:,}",
            f"{speedup:.2f}×", str(group[0]["steps"]),
        ])  # fmt: skip
    return markdown_table(header, body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.5], help="keep fractions of heads and FFN")
    parser.add_argument("--train-samples", type=int, default=8000)
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--name", default="adaptive", help="results file name under bench/results/")
    args = parser.parse_args()
    results = {"train_samples": args.train_samples, "arms": []}
    for seed in args.seeds:
        results["arms"] += run_seed(seed, args.budgets, args.train_samples, args.arms)
        write_results(args.name, results, table(results))  # a partial result survives an interruption
    print(table(results))


if __name__ == "__main__":
    main()
