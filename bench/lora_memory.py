"""Training memory of SmolLM2-135M on Brown: full fine-tuning vs LoRA, with and without activation
checkpointing, and LoRA on a 50 %-sparse model (masks held).

Each arm is one `prunekit finetune` process: `--model smollm2 --data brown --max-steps 3 --batch-size B
--max-length L --lr 1e-4 --max-eval-tokens 512`, LoRA r 8 on every projection (dropout 0.05, the default,
unless the arm says otherwise; "PEFT's own forward" runs the same command with prunekit's recomputed
LoRA updates switched off, i.e. as before). The figure compared is `train.training_memory.peak_rss_mb`: the
process's resident high-water mark from the start to the end of the training loop (reset when it starts),
so the weights, optimizer state, gradients and activations, plus the Python/torch runtime (~450 MiB),
but not loading or evaluation. Arms run one after another, nothing else running. The sparse arm's model
is SmolLM2 with 50 % of every projection zeroed by magnitude (per matrix).

Run: python bench/lora_memory.py [--batch-size 8] [--max-length 256] -> bench/results/lora-memory.{json,md}
  (~15 min on 2 cores); with --mmap-threshold 1048576 -> lora-memory-mmap.{json,md}
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys

from harness import BROWN, markdown_table, prunekit, trained, work_dir, write_results

ARMS = {  # arm -> (model, finetune flags)
    "full": ("smollm2", []),
    "lora, PEFT's own forward": ("smollm2", ["--lora"]),  # before prunekit recomputed the updates (see --peft)
    "lora": ("smollm2", ["--lora"]),
    "lora, dropout 0": ("smollm2", ["--lora", "--lora-dropout", "0"]),
    "full, checkpointing": ("smollm2", ["--gradient-checkpointing"]),
    "lora, checkpointing": ("smollm2", ["--lora", "--gradient-checkpointing"]),
    "lora on 50 % sparse": ("sparse", ["--lora"]),
    "lora on 50 % sparse, checkpointing": ("sparse", ["--lora", "--gradient-checkpointing"]),
}


def peft_forward(words: list[str]) -> None:
    """``prunekit WORDS`` with PEFT's own LoRA forward (the dropped-out input of every adapted layer kept for
    the backward pass), as before prunekit recomputed the updates: the A of the A/B."""
    import prunekit.training.lora as lora
    from prunekit.cli import main

    lora.recompute_lora_updates = lambda model, masks=None: 0  # unmasked arms only
    raise SystemExit(main(words))


def main() -> None:
    if sys.argv[1:2] == ["--peft"]:
        peft_forward(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    parser.add_argument("--mmap-threshold", type=int, help="bytes: glibc serves larger allocations by mmap and "
                        "returns them when freed (MALLOC_MMAP_THRESHOLD_), so RSS follows live memory; "
                        "results go to lora-memory-mmap")  # fmt: skip
    parser.add_argument("--tag", help="results go to lora-memory-TAG (a rerun beside the recorded one)")
    args = parser.parse_args()
    name = "lora-memory" + (f"-{args.tag}" if args.tag else "")
    if args.mmap_threshold is not None:
        os.environ["MALLOC_MMAP_THRESHOLD_"] = str(args.mmap_threshold)  # the arms' processes inherit it
        name += "-mmap"
    sparse = trained("prune", "magnitude", "--model", "smollm2", "--scope", "layer", "--sparsity", "0.5")[0]
    common = ["--data", BROWN, "--max-steps", str(args.steps), "--batch-size", str(args.batch_size),
              "--max-length", str(args.max_length), "--lr", "1e-4", "--max-eval-tokens", "512"]  # fmt: skip
    results = {"batch_size": args.batch_size, "max_length": args.max_length, "steps": args.steps,
               "mmap_threshold": args.mmap_threshold, "arms": []}  # fmt: skip
    work = work_dir(name)
    for arm in args.arms:
        model, flags = ARMS[arm]
        out = work / arm.replace(" ", "-").replace(",", "").replace("%", "pct")
        shutil.rmtree(out, ignore_errors=True)  # measured afresh on every run
        words = ["finetune", "--model", "smollm2" if model == "smollm2" else sparse, *common, *flags, "--out", out]
        if "PEFT" in arm:
            command = [sys.executable, __file__, "--peft", *map(str, words)]
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            summary = json.loads((out / "summary.json").read_text())
        else:
            summary = prunekit(*words)
        train = summary["train"]
        results["arms"].append({
            "arm": arm, "flags": flags, "training_peak_rss_mb": train["training_memory"]["peak_rss_mb"],
            "process_peak_rss_mb": train["peak_rss_mb"], "trainable_params": train["trainable_params"],
            "seconds_per_step": round(train["runtime_s"] / train["steps"], 2), "loss": train["loss"],
        })  # fmt: skip
        write_results(name, results, table(results))
    print(table(results))


def table(results: dict) -> str:
    arms = results["arms"]
    full = next((a["training_peak_rss_mb"] for a in arms if a["arm"] == "full"), None)
    header = ["arm", "trainable params", "training peak RSS (MiB)", "vs full", "process peak (MiB)", "s / step"]
    body = [
        [a["arm"], f"{a['trainable_params']:,}", f"{a['training_peak_rss_mb']:.0f}",
         f"{a['training_peak_rss_mb'] / full:.2f}×" if full else "—", f"{a['process_peak_rss_mb']:.0f}",
         f"{a['seconds_per_step']:.1f}"]
        for a in arms
    ]  # fmt: skip
    shape = f"Batch {results['batch_size']} × {results['max_length']} tokens, {results['steps']} steps per arm."
    if results.get("mmap_threshold"):
        shape += f" MALLOC_MMAP_THRESHOLD_={results['mmap_threshold']}."
    return f"{shape}\n\n{markdown_table(header, body)}"


if __name__ == "__main__":
    main()
