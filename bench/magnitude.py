"""Magnitude pruning on the real model: accuracy vs sparsity, measured against the dense parent.

All arms use all-MiniLM-L6-v2 on GLUE SST-2 (dev: all 872 sentences). In one run:
- dense: fine-tuned on 8,000 training sentences, one pass (the reference every arm is compared to);
- one-shot global vs layer-wise magnitude pruning of the dense model at 50 / 70 / 90 %, and 2:4:
  dev accuracy right after pruning, and after a short recovery fine-tune (2,000 other sentences,
  one pass, masks held);
- Wanda vs magnitude, one-shot, no recovery, at 50 % (per-row, as Wanda compares) and 2:4;
- gradual cubic pruning to 70 / 90 % during the dense fine-tune itself (same 8,000 sentences), and a
  longer run (3 passes) to 90 %;
- speed: the 90 % model timed against the dense one (dense kernels: no speed-up expected);
- size: the sparse save format at 50 / 90 % against the dense file.

Run: python bench/magnitude.py  (writes bench/results/magnitude.{json,md}; about 45 min on 2 cores)
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch
from harness import SST2, markdown_table, sst2_parent, work_dir, write_results
from transformers import set_seed

from prunekit.data import load_task_data
from prunekit.evaluation import count_flops, evaluate_model, make_inputs, measure_latency
from prunekit.methods.gradual import SparsityCallback
from prunekit.methods.magnitude import MagnitudeConfig, prune_magnitude
from prunekit.models import load_model
from prunekit.pruning.schedules import CubicSchedule
from prunekit.pruning.sparse_format import SPARSE_FILE, save_sparse
from prunekit.training import FinetuneConfig, finetune

MAX_LENGTH = 64


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.main = load_task_data(str(SST2), max_train_samples=args.train_samples, seed=42)
        recovery = load_task_data(str(SST2), max_train_samples=args.train_samples + args.recovery_samples, seed=42)
        seen = set(self.main.train.text_a)
        fresh = [i for i, text in enumerate(recovery.train.text_a) if text not in seen][: args.recovery_samples]
        self.recovery = recovery.train.subset(fresh)
        self.calibration = self.main.train.subset(range(128))
        self.work = work_dir("magnitude")
        self.results: dict = {
            "setup": {
                "model": "all-MiniLM-L6-v2",
                "task": "sst2",
                "train_samples": len(self.main.train),
                "recovery_samples": len(self.recovery),
                "eval_samples": len(self.main.eval),
                "max_length": MAX_LENGTH,
                "batch_size": 32,
                "lr": 5e-5,
                "threads": torch.get_num_threads(),
            },
            "arms": [],
        }

    def accuracy(self, model, tokenizer) -> float:
        return evaluate_model(model, tokenizer, self.main.eval, self.main.task, max_length=MAX_LENGTH, progress=False)[
            "accuracy"
        ]

    def train(self, model, tokenizer, split, callback=None, epochs: float = 1.0) -> float:
        config = FinetuneConfig(epochs=epochs, max_length=MAX_LENGTH, logging_steps=1000)
        start = time.perf_counter()
        finetune(
            model,
            tokenizer,
            split,
            self.main.task,
            config,
            self.work / "trainer",
            callbacks=[callback] if callback else [],
        )
        return round(time.perf_counter() - start, 1)

    def record(self, **arm) -> None:
        self.results["arms"].append(arm)
        write_results("magnitude", self.results)  # partial results survive an interruption
        print(json.dumps(arm), flush=True)

    def run(self) -> None:
        parent, summary = sst2_parent(self.args.train_samples, MAX_LENGTH)
        model, tokenizer = load_model(str(parent), self.main.task)
        seconds = summary["train"]["runtime_s"]
        dense_accuracy = self.accuracy(model, tokenizer)
        self.dense, self.tokenizer = model, tokenizer
        self.record(
            arm="dense", sparsity=0.0, accuracy=dense_accuracy, train_s=seconds, train_samples=len(self.main.train)
        )

        for name, config in [
            *[
                (f"one-shot {scope}", MagnitudeConfig(sparsity=s, scope=scope))
                for s in (0.5, 0.7, 0.9)
                for scope in ("global", "layer")
            ],
            ("one-shot 2:4", MagnitudeConfig(pattern="2:4")),
        ]:
            self.one_shot(name, config, recover=True)
        for name, config in [
            ("one-shot magnitude (row)", MagnitudeConfig(sparsity=0.5, scope="row")),
            ("one-shot wanda (row)", MagnitudeConfig(sparsity=0.5, scope="row", importance="wanda")),
            ("one-shot magnitude 2:4", MagnitudeConfig(pattern="2:4")),
            ("one-shot wanda 2:4", MagnitudeConfig(pattern="2:4", importance="wanda")),
        ]:
            self.one_shot(name, config, recover=False)

        for sparsity, epochs in ((0.7, 1.0), (0.9, 1.0), (0.9, 3.0)):
            self.gradual(sparsity, epochs)
        self.speed_and_size()
        write_results("magnitude", self.results, self.table())
        print(self.table())

    def one_shot(self, name: str, config: MagnitudeConfig, recover: bool) -> None:
        model = copy.deepcopy(self.dense)
        calibration = None
        if config.importance == "wanda":
            calibration = [
                self.tokenizer(text, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
                for text in self.calibration.text_a
            ]
        start = time.perf_counter()
        masks = prune_magnitude(model, config, calibration)
        prune_s = round(time.perf_counter() - start, 2)
        arm = dict(
            arm=name,
            sparsity=masks.sparsity(),
            pattern=config.pattern,
            scope=config.scope,
            importance=config.importance,
            accuracy_pruned=self.accuracy(model, self.tokenizer),
            prune_s=prune_s,
        )
        if recover:
            arm["recovery_train_s"] = self.train(model, self.tokenizer, self.recovery, SparsityCallback(masks))
            arm["recovery_samples"] = len(self.recovery)
            arm["accuracy"] = self.accuracy(model, self.tokenizer)
            params = dict(model.named_parameters())
            arm["masks_held"] = all(bool((params[n][~m] == 0).all()) for n, m in masks.masks.items())
        self.record(**arm)
        if name == "one-shot global" and masks.sparsity() > 0.89:
            self.sparse90 = (model, masks)
        if name == "one-shot global" and 0.49 < masks.sparsity() < 0.51:
            self.sparse50 = (model, masks)

    def gradual(self, sparsity: float, epochs: float) -> None:
        set_seed(42)
        model, tokenizer = load_model("minilm", self.main.task)
        steps = int(len(self.main.train) / 32 * epochs)
        schedule = CubicSchedule(sparsity, start=0, end=int(steps * 2 / 3), every=10)
        callback = SparsityCallback(schedule=schedule, config=MagnitudeConfig(sparsity=sparsity))
        seconds = self.train(model, tokenizer, self.main.train, callback, epochs=epochs)
        self.record(
            arm=f"gradual cubic ({epochs:g} pass{'es' if epochs > 1 else ''})",
            sparsity=callback.masks.sparsity(),
            accuracy=self.accuracy(model, tokenizer),
            train_s=seconds,
            train_samples=len(self.main.train),
            epochs=epochs,
            schedule={"start": schedule.start, "end": schedule.end, "every": schedule.every},
        )

    def speed_and_size(self) -> None:
        sparse_model, _ = self.sparse90
        models = [sparse_model, self.dense]
        speed = {}
        for batch in (32, 1):
            inputs = [make_inputs(m, batch, 128) for m in models]
            stats = measure_latency(models, inputs, threads=2, repeats=20)
            speed[f"batch{batch}_seq128"] = {
                "sparse90_ms": round(stats[0].median, 2),
                "dense_ms": round(stats[1].median, 2),
                "ratio_vs_dense": round(stats[1].median / stats[0].median, 3),
                "flops_equal": count_flops(models[0], inputs[0]) == count_flops(models[1], inputs[1]),
            }
        sizes = {}
        self.dense.save_pretrained(self.work / "dense")
        dense_bytes = (self.work / "dense" / "model.safetensors").stat().st_size
        for label, (model, masks) in (("50", self.sparse50), ("90", self.sparse90)):
            save_sparse(model, masks, self.work / f"sparse{label}")
            sparse_bytes = (self.work / f"sparse{label}" / SPARSE_FILE).stat().st_size
            sizes[f"sparsity_{label}"] = {
                "dense_bytes": dense_bytes,
                "sparse_bytes": sparse_bytes,
                "ratio": round(sparse_bytes / dense_bytes, 3),
            }
        self.results["speed"] = speed
        self.results["size"] = sizes

    def table(self) -> str:
        dense = self.results["arms"][0]["accuracy"]
        body = []
        for arm in self.results["arms"]:
            final = arm.get("accuracy")
            body.append([
                arm["arm"], arm.get("pattern") or format(arm["sparsity"], ".2f"),
                f"{arm['accuracy_pruned']:.4f}" if "accuracy_pruned" in arm else "—",
                "—" if final is None else format(final, ".4f"),
                f"{100 * (final if final is not None else arm['accuracy_pruned']) / dense:.1f} %",
            ])  # fmt: skip
        arms = markdown_table(
            ["arm", "sparsity", "accuracy right after pruning", "after recovery / training", "% of dense"], body
        )
        speed = [[shape, f"{v['ratio_vs_dense']:.3f}×"] for shape, v in self.results["speed"].items()]
        size = [[f"{k.replace('_', ' ')} %", f"{v['ratio']:.3f}"] for k, v in self.results["size"].items()]
        return "\n\n".join([
            arms,
            markdown_table(["90 % sparse vs dense (same run)", "speed-up"], speed),
            markdown_table(["sparse format", "file size vs dense"], size),
        ])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train-samples", type=int, default=8000)
    parser.add_argument("--recovery-samples", type=int, default=2000)
    Bench(parser.parse_args()).run()


if __name__ == "__main__":
    main()
