"""SmolLM2-135M SparseGPT 50 %: the resident (whole-model) pass beside the layer-streamed one (`--stream`).

The same command twice, `prunekit prune magnitude --model smollm2 --importance sparsegpt` with 16
calibration windows of 512 tokens from brown/train.txt (seed 0) and every other setting at its default,
once as it loads the whole model and once with `--stream`. The streamed output is evaluated afterwards
with `prunekit evaluate` (it evaluates nothing itself), on the same Brown dev tokens as the resident run
(the first 16,384 in 512-token windows). Recorded: each run's `peak_rss_mb` (the process's resident
high-water mark up to the end of pruning, imports and data included), `prune_seconds`, the perplexities,
and whether every tensor of the two outputs is bit-identical. SmolLM2's weights are 538 MB in float32.

Run: python bench/llm_streamed.py  -> bench/results/llm-streamed.{json,md}  (~15 min on 2 cores)
"""

from __future__ import annotations

from pathlib import Path

import torch
from harness import BROWN, markdown_table, prunekit, work_dir, write_results

CALIBRATION = ["--calibration-samples", "16", "--calibration-length", "512", "--calibration-seed", "0"]
EVALUATION = ["--max-length", "512", "--max-eval-tokens", "16384"]


def tensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    found = {}
    for path in sorted(folder.glob("model*.safetensors")):
        found.update(load_file(path))
    return found


def main() -> None:
    import argparse

    from prunekit.models import resolve_model

    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()

    work = work_dir("llm-streamed")
    model_mb = sum(t.numel() * t.element_size() for t in tensors(Path(resolve_model("smollm2"))).values()) / 2**20
    common = ["prune", "magnitude", "--model", "smollm2", "--data", BROWN, "--importance", "sparsegpt", *CALIBRATION,
              *EVALUATION]  # fmt: skip
    resident = prunekit(*common, "--out", str(work / "resident"))
    streamed = prunekit(*common, "--stream", "--out", str(work / "streamed"))
    evaluated = prunekit("evaluate", "--model", str(work / "streamed"), "--data", BROWN, *EVALUATION,
                         "--json", str(work / "streamed-eval.json"))  # fmt: skip
    a, b = tensors(work / "resident"), tensors(work / "streamed")
    identical = a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)
    rows = [
        {"pass": "resident", "peak_rss_mb": resident["peak_rss_mb"], "prune_seconds": resident["prune_seconds"],
         "perplexity": resident["metrics"]["perplexity"]},
        {"pass": "streamed", "peak_rss_mb": streamed["peak_rss_mb"], "prune_seconds": streamed["prune_seconds"],
         "perplexity": evaluated["metrics"]["perplexity"]},
    ]  # fmt: skip
    record = {"model_float32_mb": round(model_mb, 1), "calibration": CALIBRATION, "evaluation": EVALUATION,
              "identical_weights": identical, "rows": rows}  # fmt: skip
    body = [[r["pass"], f"{r['peak_rss_mb']:.0f} MiB", f"{r['peak_rss_mb'] / model_mb:.2f}x",
             f"{r['prune_seconds']:.0f}", f"{r['perplexity']:.4f}"] for r in rows]  # fmt: skip
    table = markdown_table(["pass", "peak RSS", "x float32 weights", "prune time (s)", "perplexity (Brown dev)"], body)
    table += f"\nEvery tensor of the two outputs identical: {identical}.\n"
    write_results("llm-streamed", record, table)
    print(table)


if __name__ == "__main__":
    main()
