"""The peer: llmcompressor's one-shot SparseGPT / Wanda on the same float model and calibration windows.

Runs in its own venv (`bench/.venv-llmcompressor`: llmcompressor pins its own transformers), started by
`bench/llm_oneshot.py --peer`, which writes the calibration windows (the token ids prunekit drew) and
evaluates the saved model with prunekit's perplexity, so both sides see the same tokens. Records the
wall time of `oneshot` and this process's peak RSS at its end in DIR/peer.json.

Run: bench/.venv-llmcompressor/bin/python bench/llmcompressor_peer.py --model FOLDER --calibration FILE.pt
     --method sparsegpt|wanda [--pattern 2:4] --out DIR
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from datasets import Dataset
from llmcompressor import oneshot
from llmcompressor.modifiers.pruning import SparseGPTModifier, WandaPruningModifier
from transformers import AutoModelForCausalLM, AutoTokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--calibration", required=True, help="a .pt tensor of token ids, (windows, length)")
    parser.add_argument("--method", choices=["sparsegpt", "wanda"], required=True)
    parser.add_argument("--pattern", default="0:0", help="N:M, or 0:0 for unstructured")
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    ids = torch.load(args.calibration)
    dataset = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist()})
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    settings = dict(sparsity=args.sparsity, mask_structure=args.pattern, targets=["Linear"], ignore=["re:.*lm_head"])
    if args.method == "sparsegpt":
        modifier = SparseGPTModifier(**settings, block_size=128, dampening_frac=0.01)
    else:
        modifier = WandaPruningModifier(**settings)
    started = time.perf_counter()
    oneshot(model=model, dataset=dataset, recipe=[modifier], num_calibration_samples=len(ids),
            max_seq_length=ids.shape[1], pipeline="sequential")  # fmt: skip
    seconds = time.perf_counter() - started
    # VmHWM, not ru_maxrss: Linux carries the (bigger) parent's mark into ru_maxrss across exec
    peak = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    with open(f"{args.out}/peer.json", "w", encoding="utf-8") as handle:
        json.dump({"prune_seconds": round(seconds, 1), "peak_rss_mb": round(peak, 1)}, handle)


if __name__ == "__main__":
    main()
