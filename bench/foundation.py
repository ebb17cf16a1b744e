"""Foundation benchmark: fine-tune MiniLM on SST-2, evaluate, and time it (the dense reference).

Writes bench/results/foundation.json and foundation.md. Reproduce with `make bench` or
`python bench/foundation.py [--data ../shared/data/glue/SST-2 --train-samples 8000]`.

The A/A row benchmarks the model against itself: its ratio shows the timer's noise, the yardstick
for every later speed-up claim.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch
from harness import SST2, markdown_table, measured, prunekit, sst2_parent, trained, work_dir, write_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=str(SST2))
    parser.add_argument("--train-samples", default="8000")
    args = parser.parse_args()
    if Path(args.data).resolve() == SST2.resolve():  # the dense parent other benches share
        model, summary = sst2_parent(int(args.train_samples))
    else:
        model, summary = trained("finetune", "--model", "minilm", "--data", args.data, "--max-train-samples",
                                 args.train_samples, "--max-length", "64", "--epochs", "1")  # fmt: skip
    evaluation = measured("evaluate", "--model", model, "--data", args.data, "--max-length", "64")
    benches = {}  # timings are measured anew on every run
    for shape, batch in (("batch32_seq128", 32), ("batch1_seq128", 1)):
        timing = ["--batch-size", str(batch), "--seq-len", "128", "--threads", "2"]
        benches[shape] = prunekit("bench", "--model", model, "--vs", model, *timing,
                                  "--json", work_dir("foundation") / f"{shape}.json")  # fmt: skip
    result = {
        "machine": {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__, "threads": 2},
        "train": summary["train"],  # runtime_s: the training's own time (the model may come from the cache)
        "evaluate": evaluation,
        "bench": benches,
    }
    header = ["model", "task", "train examples", "dev accuracy", "params", "size MB", "latency b32×128 ms",
              "latency b1×128 ms", "A/A ratio (noise)"]  # fmt: skip
    row = [
        "all-MiniLM-L6-v2 fine-tuned", "SST-2", str(summary["train"]["samples"]),
        f"{evaluation['metrics']['accuracy']:.4f}", f"{evaluation['params_total'] / 1e6:.1f} M",
        f"{evaluation['size_bytes'] / 1e6:.1f}", f"{benches['batch32_seq128']['latency_ms']['median']:.1f}",
        f"{benches['batch1_seq128']['latency_ms']['median']:.1f}",
        f"{benches['batch32_seq128']['ratio_vs']:.3f} / {benches['batch1_seq128']['ratio_vs']:.3f}",
    ]  # fmt: skip
    write_results("foundation", result, markdown_table(header, [row]))
    print(markdown_table(header, [row]))


if __name__ == "__main__":
    main()
