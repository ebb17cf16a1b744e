"""Foundation benchmark: fine-tune MiniLM on SST-2, evaluate, and time it (the dense reference).

Writes bench/results/foundation.json and foundation.md. Reproduce with `make bench` or
`python bench/foundation.py [--data ../shared/data/glue/SST-2 --train-samples 8000]`.

The A/A row benchmarks the model against itself: its ratio shows the timer's noise, the yardstick
for every later speed-up claim.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from prunekit.cli import main as prunekit
from prunekit.io import write_json_atomic

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def run(argv: list[str], json_path: Path | None = None) -> dict | None:
    """Run one prunekit command; return what it wrote to ``json_path``."""
    if prunekit([*argv, "--json", str(json_path)] if json_path else argv) != 0:
        raise SystemExit(f"prunekit {' '.join(argv)} failed")
    return json.loads(json_path.read_text()) if json_path else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "glue" / "SST-2"))
    parser.add_argument("--train-samples", default="8000")
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args()
    out = Path(args.out)

    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "sst2"
        start = time.perf_counter()
        run(
            [
                "finetune",
                "--model",
                "minilm",
                "--data",
                args.data,
                "--out",
                str(model),
                "--max-train-samples",
                args.train_samples,
                "--max-length",
                "64",
                "--epochs",
                "1",
            ]
        )
        finetune_s = time.perf_counter() - start
        trained = json.loads((model / "summary.json").read_text())
        evaluation = run(
            ["evaluate", "--model", str(model), "--data", args.data, "--max-length", "64"], Path(tmp) / "eval.json"
        )
        benches = {
            shape: run(
                [
                    "bench",
                    "--model",
                    str(model),
                    "--vs",
                    str(model),
                    "--batch-size",
                    str(batch),
                    "--seq-len",
                    "128",
                    "--threads",
                    "2",
                ],
                Path(tmp) / f"bench-{batch}.json",
            )
            for shape, batch in (("batch32_seq128", 32), ("batch1_seq128", 1))
        }

    result = {
        "benchmark": "foundation",
        "command": "python bench/foundation.py",
        "machine": {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__, "threads": 2},
        "train": {**trained["train"], "wall_s": round(finetune_s, 1)},
        "evaluate": evaluation,
        "bench": benches,
    }
    write_json_atomic(out / "foundation.json", result)
    lines = [
        "| model | task | train examples | dev accuracy | params | size MB | latency b32×128 ms | "
        "latency b1×128 ms | A/A ratio (noise) |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| all-MiniLM-L6-v2 fine-tuned | SST-2 | {trained['train']['samples']} | "
        f"{evaluation['metrics']['accuracy']:.4f} | {evaluation['params_total'] / 1e6:.1f} M | "
        f"{evaluation['size_bytes'] / 1e6:.1f} | {benches['batch32_seq128']['latency_ms']['median']:.1f} | "
        f"{benches['batch1_seq128']['latency_ms']['median']:.1f} | "
        f"{benches['batch32_seq128']['ratio_vs']:.3f} / {benches['batch1_seq128']['ratio_vs']:.3f} |",
    ]
    (out / "foundation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
