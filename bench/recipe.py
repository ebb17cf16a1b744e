"""A built-in recipe run end to end on real data, at a stated budget: `prunekit run` (stages, equal-budget
control, interleaved timing, ONNX export, report), recorded as bench/results/recipe-NAME.{json,md}.

Default: the `default` recipe (LoRA -> adaptive pruning with KD -> final fine-tune with KD, beside the dense
control) on MiniLM and a seeded 4,800-sentence SST-2 subset, 300 optimizer steps per stage (the control
trains 900), batch 32, max length 128, evaluated on all 872 dev sentences. A finished run in --out is
reused (`--resume` skips its finished stages), so rerunning only rewrites the record.

Run: python bench/recipe.py -> bench/results/recipe-default.{json,md} (~20 min on 2 cores)

`--first`: the README's first command instead (`--max-steps 100 --max-length 64`, the whole training
set), run afresh and timed wall-clock -> bench/results/first-run.{json,md}.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from harness import SST2, markdown_table, shown, work_dir, write_results

from prunekit.io import read_json
from prunekit.report.run_report import export_lines, read_run, table

BUDGET = ["defaults.max_train_samples=4800", "defaults.max_steps=300"]
FIRST = ["--max-steps", "100", "--max-length", "64"]  # the README's first command


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="default")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--data", default=str(SST2))
    parser.add_argument("--set", dest="overrides", action="append", default=None, help=f"default: {BUDGET}")
    parser.add_argument("--out", help="the run folder (default: RECIPE in the bench cache)")
    parser.add_argument("--name", help="results name (default recipe-RECIPE, or first-run with --first)")
    parser.add_argument("--first", action="store_true", help="the README's first command, afresh and timed")
    args = parser.parse_args()
    out = Path(args.out or work_dir("recipe") / (args.recipe + ("-first" if args.first else "")))
    command = ["run", args.recipe, "--model", args.model, "--data", args.data, "--out", str(out)]
    if args.first:
        command += FIRST
        again = ["--overwrite"] if out.exists() else []
    else:
        overrides = BUDGET if args.overrides is None else args.overrides
        command += [word for override in overrides for word in ("--set", override)]
        again = ["--resume"] if (out / "run.json").is_file() else []
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "prunekit", *command, *again], check=True)
    wall = round(time.monotonic() - started, 1) if args.first else None
    record(args.name or ("first-run" if args.first else f"recipe-{args.recipe}"), command, out, wall)


def record(name: str, command: list[str], out: Path, wall_s: float | None = None) -> None:
    _, rows = read_run(out)
    stages = []
    for row in rows:
        s = row.summary
        stages.append({
            "stage": row.name, "method": row.method, "role": row.role, "metric_name": row.metric_name,
            "metric": row.metric, "params_total": s.get("params_total"), "params_nonzero": s.get("params_nonzero"),
            "size_bytes": s.get("size_bytes"), "train_steps": (s.get("train") or {}).get("steps"),
            "train_runtime_s": (s.get("train") or {}).get("runtime_s"),
            "seconds": read_json(out / row.folder / "stage.json").get("seconds"),  # the whole stage's time
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
    if wall_s is not None:
        text += f"\n\nWall-clock time of the whole command: {wall_s / 60:.1f} min ({wall_s:.0f} s)."
    write_results(name, {"command": shown(command, out), "wall_s": wall_s, "stages": stages}, text)
    print(text)


if __name__ == "__main__":
    main()
