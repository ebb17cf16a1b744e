"""Distillation on the real model: KD vs plain fine-tuning for a smaller and a pruned student.

Teacher: all-MiniLM-L6-v2 fine-tuned in this run on 8,000 SST-2 training sentences (one pass,
batch 32, lr 5e-5, max length 64); dev: all 872 sentences. Every student arm trains on the same
8,000 sentences for one pass with the same hyper-parameters, with and without the teacher:
- 3-layer student, initialised from teacher layers 0, 2, 4 (DistilBERT's every-other-layer init);
- pruned teachers (Taylor importance, the same fraction in every layer): heads + FFN 50 %, and
  layers 6 -> 3 with heads + FFN 50 % / 70 % — distillation as the recovery step (plain recovery
  of the globally ranked variants is in bench/structured.py);
KD loss: 0.5 · CE + 0.5 · KL at T = 2 (× T²) + 1.0 · (1 − cos) hidden states over the auto layer map.
Latency: batch 32 x seq 128 and batch 1 x seq 128, interleaved with the teacher (2 threads).
STS-B (regression) once: teacher fine-tuned on all 5,749 pairs, 3-layer student distilled
(MSE to the teacher's score + MSE to the label), Pearson on the 1,500 dev pairs.

Longer recovery: ``--passes N`` trains every student N passes instead of one and adds a dense
control (the teacher trained N more passes, plain), so "% of teacher" can be read next to what the
extra budget alone buys; ``--teacher-passes`` trains a stronger teacher; ``--students`` picks the
arms (see STUDENTS), ``--methods`` plain and/or distill, ``--seeds`` trains every student arm once
per seed (data order, dropout; the table averages them), ``--name`` the result files.

Run: python bench/distill.py  (writes bench/results/distill.{json,md}; about 30 min on 2 cores)
Speed targets (issue 4): python bench/distill.py --passes 2 --skip-stsb --name distill-2pass \
    --students layers3 heads50-ffn45 heads33-ffn25 layers3-heads30-ffn30  (about 50 min)
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import replace
from statistics import mean

from harness import SST2, STSB, markdown_table, sst2_parent, trained, work_dir, write_results

from prunekit.data import encode_batches, load_task_data
from prunekit.evaluation import evaluate_model, make_inputs, measure_latency
from prunekit.methods.structured import StructuredConfig, prune_structured
from prunekit.models import count_parameters, load_model
from prunekit.training import FinetuneConfig, finetune
from prunekit.training.distill import DistillConfig, distill, student_from_teacher

KD = dict(temperature=2.0, alpha_ce=0.5, alpha_kd=0.5, alpha_hidden=1.0, hidden_loss="cosine")
# name -> (label, how the student is made from the teacher): a layer count (every k-th layer copied)
# or a structured pruning (Taylor importance on 256 training sentences, the same fraction per layer)
STUDENTS: dict[str, tuple[str, int | StructuredConfig]] = {
    "layers3": ("3 layers", 3),
    "heads50-ffn50": ("heads + FFN 50 % pruned (uniform)", StructuredConfig(heads=0.5, ffn=0.5, scope="uniform")),
    "heads50-ffn45": ("heads 50 % + FFN 55 % pruned (uniform)", StructuredConfig(heads=0.5, ffn=0.45, scope="uniform")),
    "heads50-ffn37": (
        "heads 50 % + FFN 62.5 % pruned (uniform)",
        StructuredConfig(heads=0.5, ffn=0.375, scope="uniform", round_to=32),
    ),
    "heads33-ffn25": (
        "heads 67 % + FFN 75 % pruned (uniform)",
        StructuredConfig(heads=0.34, ffn=0.25, scope="uniform"),
    ),
    "layers3-heads50-ffn50": (
        "layers 6 -> 3 + heads/FFN 50 % (uniform)",
        StructuredConfig(layers=3, heads=0.5, ffn=0.5, scope="uniform"),
    ),
    "layers4-heads33-ffn25": (
        "layers 6 -> 4 + heads 67 % + FFN 75 % pruned (uniform)",
        StructuredConfig(layers=4, heads=0.34, ffn=0.25, scope="uniform", round_to=32),
    ),
    "layers4-heads25-ffn19": (
        "layers 6 -> 4 + heads 75 % + FFN 81 % pruned (uniform)",
        StructuredConfig(layers=4, heads=0.25, ffn=0.1875, scope="uniform", round_to=32),
    ),
    "layers3-heads30-ffn30": (
        "layers 6 -> 3 + heads/FFN 70 % (uniform)",
        StructuredConfig(layers=3, heads=0.3, ffn=0.3, scope="uniform"),
    ),
}
METHOD_LABELS = {"plain": "fine-tune (no KD)", "distill": "distill"}
DEFAULT_STUDENTS = ["layers3", "heads50-ffn50", "layers3-heads50-ffn50", "layers3-heads30-ffn30"]


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.work = work_dir("distill")
        self.control: float | None = None  # dense control's accuracy, with --passes
        # without a hidden-state loss only the teacher's logits are needed: compute them once
        self.kd = {**KD, "alpha_hidden": args.alpha_hidden, "cache_teacher": not args.alpha_hidden}
        self.results: dict = {
            "setup": {
                "model": "all-MiniLM-L6-v2",
                "kd_loss": self.kd,
                "threads": 2,
                "lr": 5e-5,
                "batch_size": 32,
                "student_passes": args.passes,
                "teacher_passes": args.teacher_passes,
            },
            "arms": [],
        }

    def record(self, **arm) -> None:
        self.results["arms"].append(arm)
        write_results(self.args.name, self.results)
        print(json.dumps(arm), flush=True)

    def train(self, model, tokenizer, data, config, teacher=None, **kd) -> float:
        start = time.perf_counter()
        if teacher is None:
            finetune(model, tokenizer, data.train, data.task, config, self.work / "trainer")
        else:
            distill(model, teacher, tokenizer, data.train, data.task, config, DistillConfig(**kd), self.work / "t")
        return round(time.perf_counter() - start, 1)

    def score(self, model, tokenizer, data, max_length) -> float:
        metrics = evaluate_model(model, tokenizer, data.eval, data.task, max_length=max_length, progress=False)
        return metrics[data.task.main_metric]

    def speed(self, model, teacher) -> dict:
        speed = {}
        for batch, repeats in ((32, 10), (1, 30)):
            models = [model.eval(), teacher.eval()]
            inputs = [make_inputs(m, batch, 128) for m in models]
            stats = measure_latency(models, inputs, threads=2, warmup=2, repeats=repeats)
            speed[f"batch{batch}"] = round(stats[1].median / stats[0].median, 3)
        return speed

    @staticmethod
    def teacher(folder, data):
        """The fine-tuned MiniLM in ``folder`` (a cached bench model): (model in eval mode, tokenizer)."""
        teacher, tokenizer = load_model(str(folder), data.task)
        return teacher.eval(), tokenizer

    def sst2(self) -> None:
        data = load_task_data(str(SST2), max_train_samples=self.args.train_samples, seed=42)
        config = FinetuneConfig(epochs=1.0, max_length=64, logging_steps=1000)
        folder, summary = sst2_parent(self.args.train_samples, 64, passes=self.args.teacher_passes)
        teacher, tokenizer = self.teacher(folder, data)
        seconds = summary["train"]["runtime_s"]
        dense = self.score(teacher, tokenizer, data, 64)
        self.record(
            task="sst2",
            arm="teacher (6 layers)",
            accuracy=dense,
            params=count_parameters(teacher)[0],
            train_s=seconds,
            train_samples=len(data.train),
        )
        if self.args.passes != 1:
            more = ["--data", SST2, "--max-train-samples", str(self.args.train_samples), "--max-length", "64",
                    "--epochs", f"{self.args.passes:g}"]  # fmt: skip
            _, control = trained("finetune", "--model", folder, *more)
            self.control = control["metrics"]["accuracy"]
            self.record(
                task="sst2",
                arm=f"dense control: teacher + {self.args.passes:g} more passes",
                accuracy=self.control,
                percent_of_teacher=round(100 * self.control / dense, 2),
                train_s=control["train"]["runtime_s"],
            )
        batches = encode_batches(data.train.subset(range(min(256, len(data.train)))), tokenizer, 64, regression=False)
        student_config = replace(config, epochs=self.args.passes)
        for key in self.args.students:
            label, how = STUDENTS[key]
            if isinstance(how, int):
                student, kept = student_from_teacher(teacher, how)
                label = f"{label} (teacher layers {kept})"
            else:
                student = copy.deepcopy(teacher)
                prune_structured(student, how, batches)
            before = self.score(student, tokenizer, data, 64)
            for method in self.args.methods:
                kd_teacher = teacher if method == "distill" else None
                for index, seed in enumerate(self.args.seeds):
                    model = copy.deepcopy(student)
                    seeded = replace(student_config, seed=seed)
                    seconds = self.train(model, tokenizer, data, seeded, kd_teacher, **self.kd)
                    model.eval()
                    accuracy = self.score(model, tokenizer, data, 64)
                    self.record(
                        task="sst2",
                        arm=f"{label}: {METHOD_LABELS[method]}",
                        seed=seed,
                        accuracy_before=before,
                        accuracy=accuracy,
                        percent_of_teacher=round(100 * accuracy / dense, 2),
                        **self.percent_of_control(accuracy),
                        params=count_parameters(model)[0],
                        train_s=seconds,
                        train_samples=len(data.train),
                        passes=self.args.passes,
                        # the architecture does not change with the seed: timed once
                        **({"speedup_vs_teacher": self.speed(model, teacher)} if index == 0 else {}),
                    )

    def percent_of_control(self, accuracy: float) -> dict:
        return {"percent_of_control": round(100 * accuracy / self.control, 2)} if self.control else {}

    def stsb(self) -> None:
        data = load_task_data(str(STSB), max_train_samples=self.args.stsb_samples, seed=42)
        config = FinetuneConfig(epochs=1.0, max_length=128, logging_steps=1000)
        subset = ["--max-train-samples", str(self.args.stsb_samples)] if self.args.stsb_samples else []
        folder, summary = trained("finetune", "--model", "minilm", "--data", STSB, *subset, "--max-length", "128",
                                  "--epochs", "1")  # fmt: skip
        teacher, tokenizer = self.teacher(folder, data)
        self.record(
            task="stsb",
            arm="teacher (6 layers)",
            pearson=self.score(teacher, tokenizer, data, 128),
            train_s=summary["train"]["runtime_s"],
            train_samples=len(data.train),
        )
        student, kept = student_from_teacher(teacher, 3)
        seconds = self.train(student, tokenizer, data, config, teacher, alpha_ce=0.5, alpha_kd=0.5, cache_teacher=True)
        self.record(
            task="stsb",
            arm=f"3 layers (teacher layers {kept}): distill",
            pearson=self.score(student.eval(), tokenizer, data, 128),
            train_s=seconds,
            train_samples=len(data.train),
        )

    def table(self) -> str:
        intro = (
            f"Students trained {self.args.passes:g} pass(es) over {self.args.train_samples} SST-2 sentences; "
            f"the teacher {self.args.teacher_passes:g} pass(es). KD loss: {self.kd['alpha_ce']} CE + "
            f"{self.kd['alpha_kd']} KL at T = {self.kd['temperature']:g} + {self.args.alpha_hidden:g} cosine "
            "hidden-state loss."
        )
        header = ["task", "arm", "metric", "% of teacher", "% of dense control", "speed-up b32×128 / b1×128"]
        groups: dict[tuple[str, str], list[dict]] = {}  # one row per arm; seeds of an arm are averaged
        for arm in self.results["arms"]:
            groups.setdefault((arm["task"], arm["arm"]), []).append(arm)
        body = []
        for (task, label), arms in groups.items():
            values = [arm.get("accuracy", arm.get("pearson")) for arm in arms]
            value = f"{mean(values):.4f}"
            if len(values) > 1:
                value += f" (mean of {len(values)} seeds: {', '.join(f'{v:.4f}' for v in values)})"
            percent, control = (
                f"{mean(arm[key] for arm in arms):.1f} %" if key in arms[0] else "—"
                for key in ("percent_of_teacher", "percent_of_control")
            )
            speed = arms[0].get("speedup_vs_teacher")
            speed = f"{speed['batch32']:.2f}× / {speed['batch1']:.2f}×" if speed else "—"
            body.append([task, label, value, percent, control, speed])
        return f"{intro}\n\n{markdown_table(header, body)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train-samples", type=int, default=8000, help="SST-2 training sentences")
    parser.add_argument("--stsb-samples", type=int, help="STS-B training pairs (default: all 5,749)")
    parser.add_argument("--skip-stsb", action="store_true")
    parser.add_argument("--passes", type=float, default=1.0, help="training passes for every student")
    parser.add_argument("--teacher-passes", type=float, default=1.0, help="training passes for the SST-2 teacher")
    parser.add_argument("--students", nargs="+", choices=list(STUDENTS), default=DEFAULT_STUDENTS)
    parser.add_argument("--methods", nargs="+", choices=list(METHOD_LABELS), default=list(METHOD_LABELS))
    parser.add_argument("--alpha-hidden", type=float, default=KD["alpha_hidden"], help="0: soft targets only")
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[42], help="training seeds per student arm (the table shows the mean)"
    )
    parser.add_argument("--name", default="distill", help="result files: bench/results/NAME.json and .md")
    args = parser.parse_args()
    bench = Bench(args)
    bench.sst2()
    if not args.skip_stsb:
        bench.stsb()
    write_results(args.name, bench.results, bench.table())
    print(bench.table())


if __name__ == "__main__":
    main()
