"""``prunekit report DIR`` (a run's report) and ``prunekit compare DIR ... --out DIR`` (runs side by side)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(commands) -> None:
    p = commands.add_parser("report", help="write a run's report.md and self-contained report.html (with plots)")
    p.add_argument("run", metavar="DIR", help="the --out folder of `prunekit run`")
    p.set_defaults(handler=report)
    p = commands.add_parser("compare", help="runs side by side, with metric vs speed-up / size Pareto plots")
    p.add_argument("runs", nargs="+", metavar="DIR", help="--out folders of `prunekit run`")
    p.add_argument("--out", required=True, help="folder for compare.md, compare.html, compare.json and the plots")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(handler=compare)


def report(args: argparse.Namespace) -> None:
    from prunekit.report.run_report import write_report

    md, page = write_report(args.run)
    print(f"report: {md} and {page}")


def compare(args: argparse.Namespace) -> None:
    from prunekit.io import atomic_output_dir, check_output_dir, recover_output_dir
    from prunekit.report.compare import comparison_rows, write_comparison

    recover_output_dir(args.out)
    check_output_dir(args.out, args.overwrite, inputs=[("DIR", run) for run in args.runs])
    rows = comparison_rows(args.runs)  # every run read (and checked) before anything is written
    with atomic_output_dir(args.out, args.overwrite) as tmp:
        write_comparison(rows, tmp)
    print(f"comparison: {Path(args.out) / 'compare.md'} and {Path(args.out) / 'compare.html'}")
