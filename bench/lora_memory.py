"""Training memory of SmolLM2-135M on Brown: full fine-tuning vs LoRA, with and without activation
checkpointing, and LoRA on a 50 %-sparse model (masks held).

Each arm is one `prunekit finetune` process: `--model smollm2 --data brown --max-steps 4 --batch-size B
--max-length L --lr 1e-4 --max-eval-tokens 512`, LoRA r 8 on every projection (dropout 0.05, the default,
unless the arm says otherwise). The figure compared is `train.training_memory.peak_rss_mb`: the
process's resident high-water mark from the start to the end of the training loop (reset when it starts),
so the weights, optimizer state, gradients and activations, plus the Python/torch runtime (~450 MiB),
but not loading or evaluation. Arms run one after another, nothing else running. The sparse arm's model
is SmolLM2 with 50 % of every projection zeroed by magnitude (per matrix).

Run: python bench/lora_memory.py [--batch-size 8] [--max-length 256] -> bench/results/lora-memory.{json,md}
  (~10 min on 2 cores)
"""

from __future__ import annotations

import argparse
import shutil

from harness import BROWN, markdown_table, prunekit, trained, work_dir, write_results

ARMS = {  # arm -> (model, finetune flags)
    "full": ("smollm2", []),
    "lora": ("smollm2", ["--lora"]),
    "lora, dropout 0": ("smollm2", ["--lora", "--lora-dropout", "0"]),
    "full, checkpointing": ("smollm2", ["--gradient-checkpointing"]),
    "lora, checkpointing": ("smollm2", ["--lora", "--gradient-checkpointing"]),
    "lora on 50 % sparse": ("sparse", ["--lora"]),
    "lora on 50 % sparse, checkpointing": ("sparse", ["--lora", "--gradient-checkpointing"]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    args = parser.parse_args()
    sparse = trained("prune", "magnitude", "--model", "smollm2", "--scope", "layer", "--sparsity", "0.5")[0]
    common = ["--data", BROWN, "--max-steps", str(args.steps), "--batch-size", str(args.batch_size),
              "--max-length", str(args.max_length), "--lr", "1e-4", "--max-eval-tokens", "512"]  # fmt: skip
    results = {"batch_size": args.batch_size, "max_length": args.max_length, "steps": args.steps, "arms": []}
    work = work_dir("lora-memory")
    for name in args.arms:
        model, flags = ARMS[name]
        out = work / name.replace(" ", "-").replace(",", "").replace("%", "pct")
        shutil.rmtree(out, ignore_errors=True)  # measured afresh on every run
        summary = prunekit("finetune", "--model", "smollm2" if model == "smollm2" else sparse, *common, *flags,
                           "--out", out)  # fmt: skip
        train = summary["train"]
        results["arms"].append({
            "arm": name, "flags": flags, "training_peak_rss_mb": train["training_memory"]["peak_rss_mb"],
            "process_peak_rss_mb": train["peak_rss_mb"], "trainable_params": train["trainable_params"],
            "seconds_per_step": round(train["runtime_s"] / train["steps"], 2), "loss": train["loss"],
        })  # fmt: skip
        write_results("lora-memory", results, table(results))
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
    return f"{shape}\n\n{markdown_table(header, body)}"


if __name__ == "__main__":
    main()
