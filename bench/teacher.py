"""Which teacher the default recipe should learn from (issue #27, item 4): the recipe's first stage is
the teacher every KD stage distils from, and at the recipe bench's budget it was the weakest model in the
run (LoRA, lr 5e-4: 0.8394 against the dense control's 0.8555).

`--phase teachers`: each candidate teacher alone, trained as the recipe's first stage (300 steps on the
seeded 4,800-sentence SST-2 subset, batch 32, max length 128, all 872 dev sentences), and the dense
fine-tune of 900 steps (the equal-budget control of the whole chain). ≈ 3.5 min a teacher.

`--phase chain` (default): the whole chain (teacher -> adaptive pruning of heads and FFN 50 % with
LoRA and KD -> final fine-tune with KD, 300 steps each, then the recipe's interleaved timing) for each
variant and seed, beside the equal-budget dense control (900 steps) of that seed. ≈ 11 min a variant
and seed, 9 min a control.

Run: python bench/teacher.py --phase teachers -> bench/results/teacher-candidates.{json,md}
     python bench/teacher.py [--variants ...] [--seeds 42 43 44] -> bench/results/teacher.{json,md}
"""

from __future__ import annotations

import argparse
import copy
import statistics
import subprocess
import sys

import yaml
from harness import SST2, markdown_table, mean_std, work_dir, write_results

from prunekit.recipes.recipe import BUILTIN_DIR
from prunekit.report.run_report import read_run

BUDGET = {"max_train_samples": 4800, "max_steps": 300}
TEACHERS = {  # the recipe's first stage
    "LoRA lr 5e-4 (default)": {"method": "lora", "lr": 5e-4},
    "LoRA lr 2e-3": {"method": "lora", "lr": 2e-3},
    "LoRA r 16, lr 2e-3": {"method": "lora", "lr": 2e-3, "lora_r": 16},
    "full fine-tune lr 1e-4": {"method": "finetune", "lr": 1e-4},
}
HIDDEN = {"alpha_hidden": 1.0, "hidden_loss": "cosine"}  # layer-wise hidden-state KD (layers map one to one)
VARIANTS = {  # name: (teacher, changes to the adaptive and final stages)
    "default": ("LoRA lr 5e-4 (default)", {}),
    "LoRA 2e-3 teacher": ("LoRA lr 2e-3", {}),
    "LoRA 2e-3 teacher + hidden KD": ("LoRA lr 2e-3", HIDDEN),
}


def default_stages() -> list[dict]:
    return yaml.safe_load((BUILTIN_DIR / "default.yaml").read_text())["stages"]


def run(name: str, stages: list[dict], seed: int) -> list:
    """The recipe of ``stages`` at the bench's budget and ``seed``, run (or resumed) in the bench cache."""
    out = work_dir("teacher") / f"{name}-seed{seed}"
    recipe = work_dir("teacher") / f"{name}-seed{seed}.yaml"
    recipe.write_text(yaml.safe_dump({"defaults": {**BUDGET, "seed": seed}, "stages": stages}, sort_keys=False))
    again = ["--resume"] if (out / "run.json").is_file() else []
    command = ["run", str(recipe), "--model", "minilm", "--data", str(SST2), "--out", str(out), *again]
    subprocess.run([sys.executable, "-m", "prunekit", *command], check=True)
    return read_run(out)[1]


def control(seed: int) -> float:
    """The equal-budget dense control: the parent fine-tuned for the chain's 900 steps."""
    stage = {"name": "control", "method": "finetune", "lr": 1.0e-4, "max_steps": 3 * BUDGET["max_steps"]}
    return run("control", [stage], seed)[0].metric


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def teachers(seed: int) -> None:
    rows = []
    reference = control(seed)
    for name, change in TEACHERS.items():
        stage = {**default_stages()[0], **change}
        metric = run(slug(name), [stage], seed)[0].metric
        rows.append({"teacher": name, "stage": stage, "seed": seed, "accuracy": metric, "control": reference})
        body = [[r["teacher"], f"{r['accuracy']:.4f}", f"{100 * r['accuracy'] / reference:.1f} %"] for r in rows]
        text = markdown_table(["teacher (300 steps)", "SST-2 accuracy", "% of the 900-step dense control"], body)
        text += f"\n\nDense control (900 steps, lr 1e-4): {reference:.4f}. Seed {seed}."
        write_results("teacher-candidates", {"budget": BUDGET, "control": reference, "rows": rows}, text)
    print(text)


def chain(variants: list[str], seeds: list[int]) -> None:
    """The chains of ``variants`` for every seed, plus any other variant whose chain already finished."""
    rows = []
    for seed in seeds:
        reference = control(seed)
        for variant in VARIANTS:
            finished = (work_dir("teacher") / f"{slug(variant)}-seed{seed}" / "04-speed" / "stage.json").is_file()
            if variant not in variants and not finished:
                continue
            teacher, kd = VARIANTS[variant]
            stages = copy.deepcopy(default_stages()[:3])
            stages[0] = {**stages[0], **TEACHERS[teacher]}
            stages[1].update(kd)
            stages[2].update(kd)
            stages.append({"name": "speed", "method": "bench"})
            result = {row.name: row for row in run(slug(variant), stages, seed)}
            rows.append({
                "variant": variant, "seed": seed, "control": reference, "teacher": result["lora"].metric,
                "pruned": result["adaptive"].metric, "final": result["final"].metric,
                "speedup": result["final"].timing.get("ratio_vs_parent"),
            })  # fmt: skip
            write_results("teacher", {"budget": BUDGET, "variants": VARIANTS, "rows": rows}, table(rows))
    print(table(rows))


def table(rows: list[dict]) -> str:
    header = ["variant", "teacher", "after adaptive", "final", "final, % of the equal-budget control",
              "speed-up vs parent", "seeds"]  # fmt: skip
    body = []
    for variant in dict.fromkeys(r["variant"] for r in rows):
        group = [r for r in rows if r["variant"] == variant]
        share = [100 * r["final"] / r["control"] for r in group]
        body.append([
            variant, mean_std([r["teacher"] for r in group]), mean_std([r["pruned"] for r in group]),
            mean_std([r["final"] for r in group]), mean_std(share, 1) + " %",
            f"{statistics.fmean(r['speedup'] for r in group):.2f}×", ", ".join(str(r["seed"]) for r in group),
        ])  # fmt: skip
    controls = list({r["seed"]: r["control"] for r in rows}.values())
    return markdown_table(header, body) + f"\n\nEqual-budget dense control (900 steps): {mean_std(controls)}."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phase", choices=("teachers", "chain"), default="chain")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    args = parser.parse_args()
    if args.phase == "teachers":
        teachers(args.seeds[0])
    else:
        chain(args.variants, args.seeds)


if __name__ == "__main__":
    main()
