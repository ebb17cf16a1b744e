"""Structured pruning on the real model: accuracy vs measured speed-up, against the dense parent.

All arms use all-MiniLM-L6-v2 on GLUE SST-2 (dev: all 872 sentences). In one run:
- dense parent: fine-tuned on 8,000 training sentences, one pass (every ratio is against it);
- dense control: the parent trained for the same extra pass every pruned arm gets (so a pruned arm's
  recovery training is not mistaken for what pruning buys);
- heads 50 %, FFN 50 %, heads + FFN 50 % (global ranking, widths rounded, uniform), heads + FFN 70 %
  removed, layers 6 -> 3, and combinations aimed at 3x / 5x; Taylor importance, global ranking,
  unless named otherwise;
- criteria at the same budget (heads + FFN 50 %): taylor, magnitude, activation and random choice;
- vocabulary pruning to the tokens of the SST-2 training sentences (parameters and accuracy);
- each arm: accuracy right after pruning and after a recovery fine-tune (one more pass over the same
  8,000 sentences, lr 5e-5 with 10 % warm-up), and CPU latency at batch 32 x seq 128 and
  batch 1 x seq 128, timed interleaved with the dense parent in the same run (2 threads).

Run: python bench/structured.py  (writes bench/results/structured.{json,md}; about 60 min on 2 cores)
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import time

from harness import SST2, markdown_table, sst2_parent, trained, work_dir, write_results

from prunekit.data import encode_batches, load_task_data
from prunekit.evaluation import count_flops, evaluate_model, make_inputs, measure_latency
from prunekit.methods.structured import StructuredConfig, prune_structured
from prunekit.models import count_parameters, load_model
from prunekit.pruned_models import load_pruned, save_pruned
from prunekit.pruning.vocabulary import corpus_token_ids, prune_vocabulary
from prunekit.training import FinetuneConfig, finetune

MAX_LENGTH = 64

ARMS = [  # (name, config); Taylor importance and global ranking unless the name says otherwise
    ("heads 50 %", StructuredConfig(heads=0.5)),
    ("FFN 50 %", StructuredConfig(ffn=0.5)),
    ("heads + FFN 50 %", StructuredConfig(heads=0.5, ffn=0.5)),
    ("heads + FFN 50 %, magnitude", StructuredConfig(heads=0.5, ffn=0.5, importance="magnitude")),
    ("heads + FFN 50 %, activation", StructuredConfig(heads=0.5, ffn=0.5, importance="activation")),
    ("heads + FFN 50 %, random", StructuredConfig(heads=0.5, ffn=0.5, importance="random")),
    ("heads + FFN 50 %, FFN widths rounded to 32", StructuredConfig(heads=0.5, ffn=0.5, round_to=32)),
    ("heads + FFN 50 %, uniform", StructuredConfig(heads=0.5, ffn=0.5, scope="uniform")),
    ("heads + FFN 70 %, uniform", StructuredConfig(heads=0.3, ffn=0.3, scope="uniform")),
    ("layers 6 -> 3 (drop-one)", StructuredConfig(layers=3)),
    ("layers 6 -> 3 (block-influence)", StructuredConfig(layers=3, layer_importance="block-influence")),
    ("layers 6 -> 4 + heads/FFN 50 %, uniform", StructuredConfig(layers=4, heads=0.5, ffn=0.5, scope="uniform")),
    ("layers 6 -> 3 + heads/FFN 50 %, uniform", StructuredConfig(layers=3, heads=0.5, ffn=0.5, scope="uniform")),
    ("layers 6 -> 3 + heads/FFN 70 %, uniform", StructuredConfig(layers=3, heads=0.3, ffn=0.3, scope="uniform")),
]


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.data = load_task_data(str(SST2), max_train_samples=args.train_samples, seed=42)
        self.work = work_dir("structured")
        # recovery: one more pass over the same sentences (the dense control gets it too)
        self.recovery_config = FinetuneConfig(epochs=1.0, max_length=MAX_LENGTH, logging_steps=1000, warmup_ratio=0.1)
        self.results: dict = {
            "setup": {
                "model": "all-MiniLM-L6-v2",
                "task": "sst2",
                "train_samples": len(self.data.train),
                "recovery": "one more pass over the same training sentences, lr 5e-5 with 10 % warm-up",
                "eval_samples": len(self.data.eval),
                "max_length": MAX_LENGTH,
                "batch_size": self.recovery_config.batch_size,
                "lr": self.recovery_config.lr,
                "calibration_samples": args.calibration_samples,
                "threads": 2,
                "latency_shapes": ["batch 32 x seq 128", "batch 1 x seq 128"],
            },
            "arms": [],
        }

    def accuracy(self, model, tokenizer) -> float:
        metrics = evaluate_model(
            model, tokenizer, self.data.eval, self.data.task, max_length=MAX_LENGTH, progress=False
        )
        return metrics["accuracy"]

    def train(self, model, tokenizer) -> float:
        start = time.perf_counter()
        finetune(model, tokenizer, self.data.train, self.data.task, self.recovery_config, self.work / "trainer")
        return round(time.perf_counter() - start, 1)

    def speed(self, model) -> dict:
        """Latency ratio (dense / pruned median) at both shapes, timed interleaved with the parent."""
        speed = {}
        for batch, repeats in ((32, 10), (1, 30)):
            models = [model, self.dense]
            inputs = [make_inputs(m, batch, 128) for m in models]
            stats = measure_latency(models, inputs, threads=2, warmup=2, repeats=repeats)
            speed[f"batch{batch}"] = {
                "ms": round(stats[0].median, 2),
                "dense_ms": round(stats[1].median, 2),
                "speedup": round(stats[1].median / stats[0].median, 3),
                "flops_ratio": round(count_flops(models[1], inputs[1]) / count_flops(models[0], inputs[0]), 3),
            }
        return speed

    def record(self, **arm) -> None:
        self.results["arms"].append(arm)
        write_results("structured", self.results)  # partial results survive an interruption
        print(json.dumps(arm), flush=True)

    def calibration(self, tokenizer) -> list[dict]:
        split = self.data.train.subset(range(self.args.calibration_samples))
        return encode_batches(split, tokenizer, MAX_LENGTH, regression=False)

    def run(self) -> None:
        parent, summary = sst2_parent(self.args.train_samples, MAX_LENGTH)
        self.dense, self.tokenizer = load_model(str(parent), self.data.task)
        self.dense.eval()
        self.dense_params = count_parameters(self.dense)[0]
        self.record(
            arm="dense parent",
            accuracy=summary["metrics"]["accuracy"],
            params=self.dense_params,
            train_s=summary["train"]["runtime_s"],
            train_passes=1,
        )
        recovery = ["--data", SST2, "--max-train-samples", str(self.args.train_samples), "--max-length",
                    str(MAX_LENGTH), "--epochs", "1", "--warmup-ratio", "0.1"]  # fmt: skip
        _, control = trained("finetune", "--model", parent, *recovery)  # the recovery pass every pruned arm gets
        self.record(
            arm="dense + recovery pass (control)",
            accuracy=control["metrics"]["accuracy"],
            params=self.dense_params,
            train_s=control["train"]["runtime_s"],
            train_passes=2,
        )
        batches = self.calibration(self.tokenizer)
        for name, config in ARMS:
            if re.search(self.args.only, name):
                self.arm(name, config, batches)
        self.vocabulary()
        write_results("structured", self.results, self.table())
        print(self.table())

    def arm(self, name: str, config: StructuredConfig, batches: list[dict]) -> None:
        model = copy.deepcopy(self.dense)
        start = time.perf_counter()
        result = prune_structured(model, config, batches)
        prune_s = round(time.perf_counter() - start, 2)
        accuracy_pruned = self.accuracy(model, self.tokenizer)
        train_s = self.train(model, self.tokenizer)
        model.eval()
        folder = self.work / "saved"
        save_format = save_pruned(model, folder)
        accuracy = self.accuracy(model, self.tokenizer)
        reloaded = load_pruned(folder).eval()
        self.record(
            arm=name,
            importance=config.importance if config.heads or config.ffn else None,
            layer_importance=config.layer_importance if config.layers else None,
            params=count_parameters(model)[0],
            params_ratio=round(count_parameters(model)[0] / self.dense_params, 4),
            accuracy_pruned=accuracy_pruned,
            accuracy=accuracy,
            reload_identical=self.accuracy(reloaded, self.tokenizer) == accuracy,
            save_format=save_format,
            prune_s=prune_s,
            recovery_train_s=train_s,
            train_passes=2,
            speed=self.speed(model),
            kept_layers=result["kept_layers"],
            structure=result["structure"],
        )

    def vocabulary(self) -> None:
        model = copy.deepcopy(self.dense)
        tokenizer = copy.deepcopy(self.tokenizer)
        before = count_parameters(model)[0]
        keep = corpus_token_ids(tokenizer, self.data.train.text_a)
        tokenizer, kept = prune_vocabulary(model, tokenizer, keep)
        self.record(
            arm="vocabulary from SST-2 training sentences",
            vocab_before=self.dense.get_input_embeddings().num_embeddings,
            vocab_after=len(kept),
            params=count_parameters(model)[0],
            params_ratio=round(count_parameters(model)[0] / before, 4),
            accuracy_pruned=self.accuracy(model, tokenizer),
            accuracy=None,
            train_passes=1,
            speed=self.speed(model),
        )

    def table(self) -> str:
        arms = self.results["arms"]
        dense, control = arms[0]["accuracy"], arms[1]["accuracy"]
        header = ["arm", "params", "acc. after pruning", "acc. after recovery", "% of parent", "% of control",
                  "speed-up b32×128", "speed-up b1×128"]  # fmt: skip
        body = []
        for arm in arms[2:]:
            final = arm["accuracy"] if arm["accuracy"] is not None else arm["accuracy_pruned"]
            body.append([
                arm["arm"], f"{arm['params_ratio']:.2f}×", f"{arm['accuracy_pruned']:.4f}",
                "—" if arm["accuracy"] is None else f"{arm['accuracy']:.4f}", f"{100 * final / dense:.1f} %",
                f"{100 * final / control:.1f} %", f"{arm['speed']['batch32']['speedup']:.2f}×",
                f"{arm['speed']['batch1']['speedup']:.2f}×",
            ])  # fmt: skip
        intro = f"Dense parent accuracy {dense:.4f} (1 pass); dense control with the same extra pass {control:.4f}."
        return f"{intro}\n\n{markdown_table(header, body)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train-samples", type=int, default=8000)
    parser.add_argument("--calibration-samples", type=int, default=256)
    parser.add_argument("--only", default="", help="regex: run only the arms whose name matches")
    Bench(parser.parse_args()).run()


if __name__ == "__main__":
    main()
