"""Mechanics of magnitude pruning, each measured as a ratio within one run.

1. Training step time of a masked model (prunekit's hook-free mask holding) vs the dense model vs
   torch.nn.utils.prune (weight_orig * mask recomputed by a forward-pre hook), interleaved.
2. Global pruning of a 110M-parameter BERT-base-size random model: wall time and peak extra memory
   of prunekit's radix selection vs torch.nn.utils.prune.global_unstructured, each in a fresh process.

Run: python bench/magnitude_mechanics.py  (writes bench/results/magnitude_mechanics.json)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.nn.utils import prune as torch_prune
from transformers import AutoModelForSequenceClassification, BertConfig


def _step_time(models: dict, batch: dict, steps: int, warmup: int = 2) -> dict[str, float]:
    """Median seconds per forward+backward+AdamW step, the variants interleaved step by step."""
    optimizers = {name: torch.optim.AdamW(m.parameters(), lr=1e-5) for name, (m, _) in models.items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    for step in range(warmup + steps):
        for name, (model, hold) in models.items():
            start = time.perf_counter()
            loss = model(**batch).loss
            loss.backward()
            if hold is not None:
                hold.mask_gradients(model)
            optimizers[name].step()
            if hold is not None:
                hold.apply(model)
            optimizers[name].zero_grad(set_to_none=True)
            if step >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def step_time_benchmark(steps: int) -> dict:
    from prunekit.methods.magnitude import MagnitudeConfig, prune_magnitude, resolve_targets
    from prunekit.models import load_model

    torch.set_num_threads(2)
    dense, tokenizer = load_model("minilm")
    masked, _ = load_model("minilm")
    hooked, _ = load_model("minilm")
    masks = prune_magnitude(masked, MagnitudeConfig(sparsity=0.7))
    targets = resolve_targets(hooked)
    torch_prune.global_unstructured(
        [(module, "weight") for module in targets.values()], pruning_method=torch_prune.L1Unstructured, amount=0.7
    )
    texts = ["a gorgeous , witty , seductive movie ."] * 32
    batch = dict(tokenizer(texts, padding="max_length", max_length=64, truncation=True, return_tensors="pt"))
    batch["labels"] = torch.zeros(32, dtype=torch.long)
    for model in (dense, masked, hooked):
        model.train()
    medians = _step_time(
        {"dense": (dense, None), "prunekit": (masked, masks), "torch_prune": (hooked, None)}, batch, steps
    )
    return {
        "workload": "all-MiniLM-L6-v2, batch 32 x seq 64, AdamW, 2 threads, 70 % global sparsity",
        "steps": steps,
        "step_s": {k: round(v, 4) for k, v in medians.items()},
        "prunekit_vs_dense": round(medians["prunekit"] / medians["dense"], 3),
        "torch_prune_vs_dense": round(medians["torch_prune"] / medians["dense"], 3),
        "prunekit_vs_torch_prune": round(medians["prunekit"] / medians["torch_prune"], 3),
    }


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _global_prune_child(method: str) -> None:
    """In a fresh process: build BERT-base, prune 50 % globally, print wall time and peak RSS growth.

    Peak growth = VmHWM after pruning - VmRSS before it, with the high-water mark reset just before;
    it includes the masks each method keeps (prunekit: bool masks; torch: float masks + weight_orig).
    """
    from prunekit.methods.magnitude import MagnitudeConfig, prune_magnitude, resolve_targets

    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(BertConfig())  # 110M parameters
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    baseline_kb = _rss_kb("VmRSS")
    start = time.perf_counter()
    if method == "prunekit":
        masks = prune_magnitude(model, MagnitudeConfig(sparsity=0.5))
        pruned = sum(int((~m).sum()) for m in masks.masks.values())
    else:
        targets = resolve_targets(model)
        torch_prune.global_unstructured(
            [(module, "weight") for module in targets.values()], pruning_method=torch_prune.L1Unstructured, amount=0.5
        )
        pruned = sum(int((module.weight == 0).sum()) for module in targets.values())
    elapsed = time.perf_counter() - start
    peak_kb = _rss_kb("VmHWM")
    params = sum(p.numel() for p in model.parameters())
    print(
        json.dumps(
            {"seconds": elapsed, "peak_extra_mb": (peak_kb - baseline_kb) / 1024, "pruned": pruned, "params": params}
        )
    )


def global_prune_benchmark(repeats: int) -> dict:
    runs: dict[str, list[dict]] = {"prunekit": [], "torch_prune": []}
    for _ in range(repeats):
        for method in runs:  # interleaved, each in its own process so peak memory is its own
            out = subprocess.run(
                [sys.executable, __file__, "--child", method], capture_output=True, text=True, check=True
            )
            runs[method].append(json.loads(out.stdout.strip().splitlines()[-1]))
    summary = {
        method: {
            "seconds": round(statistics.median(r["seconds"] for r in results), 3),
            "peak_extra_mb": round(statistics.median(r["peak_extra_mb"] for r in results), 1),
            "pruned": results[0]["pruned"],
        }
        for method, results in runs.items()
    }
    return {
        "workload": "BERT-base-size random model (BertConfig()), 50 % global magnitude over layer projections",
        "params": runs["prunekit"][0]["params"],
        "repeats": repeats,
        **summary,
        "time_ratio_prunekit_vs_torch": round(summary["prunekit"]["seconds"] / summary["torch_prune"]["seconds"], 3),
        "memory_ratio_prunekit_vs_torch": round(
            summary["prunekit"]["peak_extra_mb"] / max(summary["torch_prune"]["peak_extra_mb"], 1e-9), 3
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child")
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.child:
        _global_prune_child(args.child)
        return
    from harness import markdown_table, write_results  # not in the --child processes: they measure memory

    result = {
        "training_step": step_time_benchmark(args.steps),
        "global_pruning": global_prune_benchmark(args.repeats),
    }
    step, prune = result["training_step"], result["global_pruning"]
    header = ["mechanic", "prunekit", "torch.nn.utils.prune", "ratio prunekit / torch"]
    body = [
        ["training step vs dense step (MiniLM, 70 % sparse)", f"{step['prunekit_vs_dense']:.3f}×",
         f"{step['torch_prune_vs_dense']:.3f}×", f"{step['prunekit_vs_torch_prune']:.3f}"],
        [f"global 50 % pruning of BERT-base ({prune['params'] / 1e6:.0f} M params): wall time",
         f"{prune['prunekit']['seconds']:.2f} s", f"{prune['torch_prune']['seconds']:.2f} s",
         f"{prune['time_ratio_prunekit_vs_torch']:.3f}"],
        ["same: peak extra memory", f"{prune['prunekit']['peak_extra_mb']:.0f} MB",
         f"{prune['torch_prune']['peak_extra_mb']:.0f} MB", f"{prune['memory_ratio_prunekit_vs_torch']:.3f}"],
    ]  # fmt: skip
    write_results("magnitude_mechanics", result, markdown_table(header, body))
    print(markdown_table(header, body))


if __name__ == "__main__":
    main()
