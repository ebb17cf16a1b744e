"""One-shot LLM pruning of SmolLM2-135M on the Brown corpus: magnitude vs Wanda vs SparseGPT, 50 % and 2:4.

Model: `--model smollm2` (SmolLM2-135M-Instruct dequantized from the packaged 4-bit GGUF; every arm
loads the same float weights). Targets: every attention and FFN projection of the 30 layers (the tied
embedding / LM head stays dense). Calibration: 64 windows of 512 tokens drawn from brown/train.txt
(seed 0), the same for Wanda and SparseGPT, fed layer by layer (each layer sees the outputs of the
already-pruned layers before it). Evaluation: perplexity on the first 16,384 tokens of brown/dev.txt in
non-overlapping 512-token windows (16,352 tokens scored), the same tokens for every arm.
Magnitude is ranked per matrix (`--scope layer`, as in the SparseGPT/Wanda papers), Wanda per output
row (its default), SparseGPT per block of 128 columns with 1 % dampening (its defaults).
Each arm is one `prunekit prune magnitude` process: `prune_seconds` and `peak_rss_mb` (the process's
peak resident memory up to the end of pruning, before evaluation) come from its summary.

`--peer`: also llmcompressor's SparseGPT and Wanda at 50 % (`bench/llmcompressor_peer.py`, in the venv
`bench/.venv-llmcompressor` — `python3 -m venv bench/.venv-llmcompressor && bench/.venv-llmcompressor/bin/pip
install torch==2.13.0 llmcompressor==0.14.0.1`), on the same float model and the same calibration token ids,
its pruned model evaluated by prunekit on the same tokens.

Run: python bench/llm_oneshot.py [--eval-tokens 16384] [--calibration 64] [--peer]
  -> bench/results/llm-oneshot.{json,md}  (~35 min on 2 cores; the peer ~10 min an arm)
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

from harness import BROWN, markdown_table, measured, prunekit, trained, work_dir, write_results

HERE = Path(__file__).resolve().parent
ARMS = {  # arm -> prune magnitude flags
    "magnitude 50 %": ["--importance", "magnitude", "--scope", "layer", "--sparsity", "0.5"],
    "wanda 50 %": ["--importance", "wanda", "--sparsity", "0.5"],
    "sparsegpt 50 %": ["--importance", "sparsegpt", "--sparsity", "0.5"],
    "magnitude 2:4": ["--importance", "magnitude", "--pattern", "2:4"],
    "wanda 2:4": ["--importance", "wanda", "--pattern", "2:4"],
    "sparsegpt 2:4": ["--importance", "sparsegpt", "--pattern", "2:4"],
}
PEER_ARMS = {"llmcompressor sparsegpt 50 %": "sparsegpt", "llmcompressor wanda 50 %": "wanda"}
PEER_PYTHON = HERE / ".venv-llmcompressor" / "bin" / "python"


def add_setting_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of the setting this bench and bench/owl.py, bench/within_layer.py share."""
    parser.add_argument("--eval-tokens", type=int, default=16_384)
    parser.add_argument("--calibration", type=int, default=64, help="calibration windows of 512 tokens")


class Setting:
    """SmolLM2 on Brown: the evaluation and calibration flags, the dense model's evaluation, and one-shot
    pruning under them (cached per command)."""

    def __init__(self, args: argparse.Namespace):
        self.data = ["--data", BROWN, "--max-length", "512", "--max-eval-tokens", str(args.eval_tokens)]
        self.calibration = ["--calibration-samples", str(args.calibration), "--calibration-length", "512"]
        self.dense = measured("evaluate", "--model", "smollm2", *self.data)

    def record(self, args: argparse.Namespace) -> dict:
        """The results record's header (the setting and the dense perplexity), its ``arms`` still empty."""
        return {"eval_tokens": args.eval_tokens, "calibration_windows": args.calibration,
                "dense_perplexity": self.dense["metrics"]["perplexity"], "arms": []}  # fmt: skip

    def prune(self, *flags: str) -> dict:
        """The summary of ``prunekit prune magnitude --model smollm2 FLAGS`` in this setting."""
        return trained("prune", "magnitude", "--model", "smollm2", "--calibration-seed", "0", *flags,
                       *self.calibration, *self.data)[1]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_setting_arguments(parser)
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    parser.add_argument("--peer", action="store_true", help="also run llmcompressor (its own venv, see above)")
    args = parser.parse_args()
    setting = Setting(args)
    data = setting.data
    results = {"eval_tokens": args.eval_tokens, "calibration_windows": args.calibration, "arms": []}
    results["arms"].append(_row("dense", setting.dense))
    for arm in args.arms:
        results["arms"].append(_row(arm, setting.prune(*ARMS[arm])))
        write_results("llm-oneshot", results, table(results))
    if args.peer:
        results["arms"] += run_peer(work_dir("llm-oneshot"), setting.dense["model_path"], args.calibration, data)
        write_results("llm-oneshot", results, table(results))
    print(table(results))


def run_peer(work: Path, model_path: str, windows: int, data: list[str], arms: dict = PEER_ARMS) -> list[dict]:
    """llmcompressor's one-shot pruning (``arms``: row name -> method) on prunekit's calibration token ids,
    evaluated by prunekit."""
    import torch

    from prunekit.data.text import calibration_blocks, load_text_corpus
    from prunekit.models import load_tokenizer

    if not PEER_PYTHON.is_file():
        raise SystemExit(f"--peer: {PEER_PYTHON} not found; create the venv as the docstring says")
    corpus = load_text_corpus(str(BROWN), need_eval=False)
    blocks = calibration_blocks(load_tokenizer(model_path), corpus.train, windows, 512, seed=0)
    torch.save(torch.cat([b["input_ids"] for b in blocks]), work / "calibration.pt")
    rows = []
    for arm, method in arms.items():
        out = work / f"peer-{method}50"
        if not (out / "peer.json").is_file():
            subprocess.run([str(PEER_PYTHON), str(HERE / "llmcompressor_peer.py"), "--model", model_path,
                            "--calibration", str(work / "calibration.pt"), "--method", method, "--out", str(out)],
                           check=True)  # fmt: skip
        config = json.loads((out / "config.json").read_text())
        if config.pop("quantization_config", None) is not None:  # compressed-tensors' record of the sparsity
            (out / "config.json").write_text(json.dumps(config, indent=2))
        summary = prunekit("evaluate", "--model", str(out), *data, "--json", str(out.parent / f"{out.name}-eval.json"))
        summary.update(json.loads((out / "peer.json").read_text()))
        rows.append(_row(arm, summary))
    return rows


def _row(arm: str, summary: dict) -> dict:
    return {
        "arm": arm,
        "perplexity": summary["metrics"]["perplexity"],
        "tokens_scored": summary["eval_tokens"]["scored"],
        "sparsity": summary.get("sparsity"),
        "params_nonzero": summary["params_nonzero"],
        "prune_seconds": summary.get("prune_seconds"),
        "peak_rss_mb": summary.get("peak_rss_mb"),
    }


def table(results: dict) -> str:
    dense = results["arms"][0]["perplexity"]
    header = ["arm", "perplexity (Brown dev)", "× dense", "non-zero parameters", "prune time (s)", "peak RSS (MiB)"]
    body = [
        [row["arm"], f"{row['perplexity']:.2f}", f"{row['perplexity'] / dense:.3f}", f"{row['params_nonzero']:,}",
         "—" if row["prune_seconds"] is None else f"{row['prune_seconds']:.0f}",
         "—" if row["peak_rss_mb"] is None else f"{row['peak_rss_mb']:.0f}"]
        for row in results["arms"]
    ]  # fmt: skip
    return markdown_table(header, body)


if __name__ == "__main__":
    main()
