"""Gradual magnitude pruning recipes on the real model, one arm per invocation (issue 3's targets).

all-MiniLM-L6-v2 fine-tuned on 8,000 SST-2 training sentences (seeded subset, batch 32, max length
64) while pruning on the cubic schedule (Zhu & Gupta) from step ``--start`` to ``--end`` (fractions
of training), every ``--every`` steps; optional soft-target distillation from a fine-tuned teacher
(``--kd`` is the KL weight, the task loss gets the rest; logits cached once per example).
Dev: all 872 sentences. Each arm is appended to ``bench/results/gradual.json`` and the table
``gradual.md`` is rewritten, so arms from several invocations build one comparison; the reference is
the dense parent (one pass over the same sentences, the harness's cached ``sst2_parent``), which is
also the default ``--teacher``.

Run, e.g.: python bench/gradual.py --sparsity 0.7 --passes 5 --kd 0.5 --scope layer --lr 1e-4 --warmup 0.1 --seed 42
(≈ 27 min at one thread for 5 passes).
``--sparsity 0`` trains the dense arm of the same recipe; the table then also gives each pruned arm's
accuracy as a share of it (same start, passes, rate, distillation and seed).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

from harness import RESULTS, SST2, command_line, markdown_table, sst2_parent, write_results
from transformers import set_seed

from prunekit.data import load_task_data
from prunekit.evaluation import evaluate_model
from prunekit.methods.gradual import SparsityCallback
from prunekit.methods.magnitude import MagnitudeConfig
from prunekit.models import load_model
from prunekit.pruning.schedules import CubicSchedule
from prunekit.training import FinetuneConfig, finetune
from prunekit.training.distill import DistillConfig, distill

TRAIN_SAMPLES = 8000


def train_arm(args: argparse.Namespace) -> dict:
    data = load_task_data(str(SST2), max_train_samples=TRAIN_SAMPLES, seed=42)
    set_seed(args.seed)
    init = sst2_parent(TRAIN_SAMPLES)[0] if args.init == "parent" else args.init
    model, tokenizer = load_model(str(init), data.task)
    steps = int(TRAIN_SAMPLES / 32 * args.passes)
    schedule = CubicSchedule(args.sparsity, int(steps * args.start), int(steps * args.end), args.every)
    callbacks = []  # --sparsity 0: the dense arm of the same recipe
    if args.sparsity > 0:
        pruning = MagnitudeConfig(sparsity=args.sparsity, scope=args.scope)
        callbacks.append(SparsityCallback(schedule=schedule, config=pruning))
    config = FinetuneConfig(
        epochs=args.passes, lr=args.lr, warmup_ratio=args.warmup, max_length=64, logging_steps=1000, seed=args.seed
    )
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="prunekit-bench-gradual-") as work:
        if args.kd:
            teacher, _ = load_model(str(args.teacher or sst2_parent(TRAIN_SAMPLES)[0]))
            kd = DistillConfig(temperature=args.temperature, alpha_ce=1 - args.kd, alpha_kd=args.kd, cache_teacher=True)
            distill(model, teacher, tokenizer, data.train, data.task, config, kd, work, callbacks)
        else:
            finetune(model, tokenizer, data.train, data.task, config, work, callbacks=callbacks)
    seconds = round(time.perf_counter() - start)
    accuracy = evaluate_model(model, tokenizer, data.eval, data.task, max_length=64, progress=False)["accuracy"]
    return {
        "command": command_line(),
        "sparsity": callbacks[0].masks.sparsity() if callbacks else 0.0,
        "init": "pretrained" if args.init == "minilm" else "fine-tuned parent",  # parent, or a folder like it
        "scope": args.scope,
        "seed": args.seed,
        "passes": args.passes,
        "lr": args.lr,
        "warmup_ratio": args.warmup,
        "schedule": {"start": schedule.start, "end": schedule.end, "every": schedule.every, "steps": steps},
        "kd_alpha": args.kd,
        "temperature": args.temperature if args.kd else None,
        "accuracy": accuracy,
        "percent_of_dense": round(100 * accuracy / args.dense_accuracy, 2),
        "train_s": seconds,
    }


RECIPE_KEYS = ("init", "passes", "lr", "warmup_ratio", "kd_alpha", "temperature", "seed")


def same_recipe_dense(arm: dict, arms: list[dict]) -> float | None:
    """Accuracy of the dense arm trained with ``arm``'s recipe (budget, rate, distillation, seed), if run."""
    for other in arms:
        if other["sparsity"] == 0 and all(other[key] == arm[key] for key in RECIPE_KEYS):
            return other["accuracy"]
    return None


def table(results: dict) -> str:
    header = ["start", "sparsity", "scope", "passes", "schedule (steps)", "lr", "warm-up", "KD α (T)", "seed",
              "accuracy", "% of dense", "% of same-recipe dense"]  # fmt: skip
    body = []
    for arm in results["arms"]:
        schedule = arm["schedule"]
        kd = f"{arm['kd_alpha']} ({arm['temperature']:g})" if arm["kd_alpha"] else "—"
        if arm["sparsity"] > 0:
            scope = arm["scope"]
            when = f"{schedule['start']}–{schedule['end']} of {schedule['steps']}, every {schedule['every']}"
        else:
            scope, when = "—", f"no pruning, {schedule['steps']} steps"
        dense = same_recipe_dense(arm, results["arms"])
        of_dense = f"{100 * arm['accuracy'] / dense:.1f} %" if dense else "not run"
        body.append([arm["init"], f"{100 * arm['sparsity']:.0f} %", scope, f"{arm['passes']:g}", when,
                     f"{arm['lr']:g}", f"{arm['warmup_ratio']:g}", kd, str(arm["seed"]), f"{arm['accuracy']:.4f}",
                     f"{arm['percent_of_dense']:.1f} %", of_dense])  # fmt: skip
    intro = f"Dense parent (one pass over {TRAIN_SAMPLES} sentences): {results['dense_accuracy']:.4f}."
    return f"{intro}\n\n{markdown_table(header, body)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sparsity", type=float, required=True)
    parser.add_argument("--passes", type=float, default=1.0)
    parser.add_argument("--scope", default="global", choices=["global", "layer"])
    parser.add_argument(
        "--init", default="minilm", help="start model: minilm (pretrained), parent (the cached dense parent), a folder"
    )
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--warmup", type=float, default=0.0, help="warm-up fraction of the steps")
    parser.add_argument("--start", type=float, default=0.0, help="first pruning step, as a fraction of training")
    parser.add_argument("--end", type=float, default=2 / 3, help="step reaching the final sparsity, as a fraction")
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--seed", type=int, default=42, help="head initialisation, data order and dropout")
    parser.add_argument("--kd", type=float, default=0.0, help="soft-target weight (needs --teacher)")
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--teacher", help="fine-tuned dense model folder (default: the cached dense parent)")
    parser.add_argument("--dense-accuracy", type=float, help="reference accuracy (default: the dense parent's)")
    args = parser.parse_args()
    if args.dense_accuracy is None:
        args.dense_accuracy = sst2_parent(TRAIN_SAMPLES)[1]["metrics"]["accuracy"]
    arm = train_arm(args)
    print(json.dumps(arm), flush=True)
    path = RESULTS / "gradual.json"  # read only now: arms from runs that finished meanwhile are kept
    results = json.loads(path.read_text()) if path.exists() else {"arms": []}
    results["dense_accuracy"] = args.dense_accuracy
    results["arms"].append(arm)
    write_results("gradual", results, table(results))
    print(table(results))


if __name__ == "__main__":
    main()
