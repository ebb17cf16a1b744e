"""A built-in recipe run end to end on real data, at a stated budget: `prunekit run` (stages, equal-budget
control, interleaved timing, ONNX export, report), recorded as bench/results/recipe-NAME.{json,md}.

Default: the `default` recipe (LoRA -> adaptive pruning with KD -> final fine-tune with KD, beside the dense
control) on MiniLM and a seeded 4,800-sentence SST-2 subset, 300 optimizer steps per stage (the control
trains 900), batch 32, max length 128, evaluated on all 872 dev sentences. A finished run in --out is
reused (`--resume` skips its finished stages), so rerunning only rewrites the record.

Run: python bench/recipe.py -> bench/results/recipe-default.{json,md} (~40 min on 2 cores)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from harness import SST2, markdown_table, shown, work_dir, write_results

from prunekit.report.run_report import export_lines, read_run, table

BUDGET = ["defaults.max_train_samples=4800", "defaults.max_steps=300"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="default")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--data", default=str(SST2))
    parser.add_argument("--set", dest="overrides", action="append", default=None, help=f"default: {BUDGET}")
    parser.add_argument("--out", help="the run folder (default: RECIPE in the bench cache)")
    parser.add_argument("--name", help="results name (default recipe-RECIPE)")
    args = parser.parse_args()
    overrides = BUDGET if args.overrides is None else args.overrides
    out = Path(args.out or work_dir("recipe") / args.recipe)
    command = ["run", args.recipe, "--model", args.model, "--data", args.data, "--out", str(out)]
    command += [word for override in overrides for word in ("--set", override)]
    resume = ["--resume"] if (out / "run.json").is_file() else []
    subprocess.run([sys.executable, "-m", "prunekit", *command, *resume], check=True)
    record(args.name or f"recipe-{args.recipe}", command, out)


def record(name: str, command: list[str], out: Path) -> None:
    _, rows = read_run(out)
    stages = []
    for row in rows:
        s = row.summary
        stages.append({
            "stage": row.name, "method": row.method, "role": row.role, "metric_name": row.metric_name,
            "metric": row.metric, "params_total": s.get("params_total"), "params_nonzero": s.get("params_nonzero"),
            "size_bytes": s.get("size_bytes"), "train_steps": (s.get("train") or {}).get("steps"),
            "flops": row.timing.get("flops"), "latency_ms": (row.timing.get("latency_ms") or {}).get("median"),
            "ratio_vs_parent": row.timing.get("ratio_vs_parent"),
            "ratio_vs_control": row.timing.get("ratio_vs_control"),
            **({"export": {k: s[k] for k in ("max_abs_diff", "atol", "ratio_vs_torch")}} if row.method == "export"
               and s.get("format") == "onnx" else {}),
        })  # fmt: skip
    text = markdown_table(*table(rows))
    exports = export_lines(rows)
    if exports:
        text += "\n\n" + "\n".join(exports)
    write_results(name, {"command": shown(command, out), "stages": stages}, text)
    print(text)


if __name__ == "__main__":
    main()
