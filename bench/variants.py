"""Variants of the recommended workflow (`joint`) on the ordering study's exact setting (run
bench/ordering.py first): adaptive pruning's unit scores from LoRAPrune (the LoRA factors) instead of
gate gradients, and the adaptive-pruning stage training every weight instead of LoRA adapters.

For each seed and variant the study's `joint` run is repeated from the study's own teacher stage
(identical for all, so only stages 2 and 3 train: 300 steps); the study's `joint` result and
equal-budget dense control of that seed are the references. ≈ 3 min a seed and variant.

Run: python bench/variants.py [--seeds 1 2 3] -> bench/results/variants.{json,md}
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
from dataclasses import replace

from harness import SST2, markdown_table, work_dir, write_results

from prunekit.commands.compress import time_stages
from prunekit.data import load_task_data
from prunekit.models import load_model
from prunekit.recipes.orders import Target, WorkflowConfig, order_recipe, stage_rows
from prunekit.recipes.runner import run_stages

VARIANTS = {
    "LoRAPrune scores": {"adaptive_score": "lora"},
    "full fine-tuning while pruning": {"prune_with": "full"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args()
    study_dir = work_dir("ordering") / "study"  # bench/ordering.py's run
    study = json.loads((study_dir / "summary.json").read_text())
    settings = json.loads((study_dir / "study_config.json").read_text())
    fields = {k: v for k, v in settings.items() if k in WorkflowConfig.__dataclass_fields__}
    base = WorkflowConfig(**{**fields, "target": Target(**settings["target"]), "order": "joint"})
    data = load_task_data(str(SST2), need_train=False)
    dense, _ = load_model("minilm", data.task)
    joint = {run["seed"]: run for run in study["runs"] if run["order"] == "joint"}
    rows = []
    for seed in args.seeds:
        run = joint[seed]
        control = study["control"]["per_seed"][str(seed)]
        row = {"variant": "study's joint (gate scores, LoRA while pruning)", "seed": seed, "control": control}
        speedup = run["extra"]["speedup"]["32x128"]
        rows.append({**row, "accuracy": run["metrics"]["accuracy"], "speedup_32x128": speedup})
        for name, change in VARIANTS.items():
            out = work_dir("variants") / f"{name.split()[0].lower()}-{seed}"
            if not (out / "teacher" / "stage.json").is_file():
                shutil.copytree(study_dir / f"seed-{seed}" / "joint" / "teacher", out / "teacher", dirs_exist_ok=True)
            config = replace(base, seed=seed, **change)
            run_stages(order_recipe(config, {"max_length": config.max_length}), "minilm", str(SST2), out)
            final = stage_rows(out, config.stages())[-1]
            time_stages(dense, [final], out, ((32, 128),))
            speedup = final.extra["speedup"]["32x128"]
            rows.append({**row, "variant": name, "accuracy": final.metrics["accuracy"], "speedup_32x128": speedup})
            write_results("variants", {"rows": rows}, table(rows))  # after every run


def table(rows: list[dict]) -> str:
    header = ["variant of `joint`", "accuracy per seed", "mean", "% of the equal-budget control (mean)",
              "speed-up 32 × 128"]  # fmt: skip
    body = []
    for variant in dict.fromkeys(r["variant"] for r in rows):
        group = [r for r in rows if r["variant"] == variant]
        per_seed = " / ".join(f"{r['accuracy']:.4f} (seed {r['seed']})" for r in group)
        mean = statistics.fmean(r["accuracy"] for r in group)
        share = statistics.fmean(r["accuracy"] / r["control"] for r in group)
        speed = statistics.fmean(r["speedup_32x128"] for r in group)
        body.append([variant, per_seed, f"{mean:.4f}", f"{100 * share:.1f} %", f"{speed:.2f}×"])
    return markdown_table(header, body)


if __name__ == "__main__":
    main()
