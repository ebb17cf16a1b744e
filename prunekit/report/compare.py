"""``prunekit compare DIR1 DIR2 ... --out DIR``: runs side by side, with metric-vs-speed-up and
metric-vs-size Pareto plots (the frontier marked)."""

from __future__ import annotations

import os
from pathlib import Path

from prunekit.errors import ConfigError
from prunekit.report.run_report import markdown_table, read_run


def final_row(out: str | os.PathLike) -> dict:
    """A run's final model (the last stage that made one, the control aside) and its numbers."""
    run, rows = read_run(out)
    models = [row for row in rows if row.model and row.role != "control"]
    if not models:
        raise ConfigError(f"{out}: the run has no finished stage that made a model")
    last = models[-1]
    return {
        "run": str(out),
        "recipe": run.get("recipe"),
        "stage": last.name,
        "metric_name": last.metric_name,
        "metric": last.metric,
        "size_mb": round(last.summary["size_bytes"] / 1e6, 2) if last.summary.get("size_bytes") else None,
        "params_nonzero": last.summary.get("params_nonzero"),
        "speedup": last.timing.get("ratio_vs_parent"),
    }


def pareto(points: list[tuple[float, float]], lower_x_better: bool) -> list[int]:
    """Indices of the points no other point beats on both axes (higher metric; more speed-up or less size)."""

    def beats(a, b) -> bool:
        better_x = a[0] <= b[0] if lower_x_better else a[0] >= b[0]
        strictly = a[0] != b[0] or a[1] != b[1]
        return better_x and a[1] >= b[1] and strictly

    return [i for i, p in enumerate(points) if not any(beats(q, p) for j, q in enumerate(points) if j != i)]


def comparison_rows(runs: list[str]) -> list[dict]:
    """Each run's final row; the runs must report one metric."""
    rows = [final_row(run) for run in runs]
    names = {row["metric_name"] for row in rows if row["metric_name"]}
    if len(names) > 1:
        raise ConfigError(
            f"compare: the runs report different metrics ({', '.join(sorted(names))}); compare runs of one task"
        )
    return rows


def write_comparison(rows: list[dict], out: str | os.PathLike) -> tuple[Path, Path]:
    """``compare.md`` / ``compare.html`` / ``compare.json`` and the Pareto plots of ``comparison_rows`` in
    ``out``."""
    from prunekit.io import write_json_atomic, write_text_atomic
    from prunekit.report.plots import plot_pareto
    from prunekit.report.run_report import html_page

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plots = []
    for key, title, lower in (("speedup", "metric vs speed-up", False), ("size_mb", "metric vs size on disk", True)):
        points = [
            (row[key], row["metric"], row["run"]) for row in rows if row[key] is not None and row["metric"] is not None
        ]
        if points:
            frontier = pareto([(x, y) for x, y, _ in points], lower_x_better=lower)
            path = plot_pareto(points, frontier, key, title, out / f"pareto-{key.split('_')[0]}.png")
            plots.append((title, path))
            for index, point in enumerate(points):
                next(r for r in rows if r["run"] == point[2])[f"pareto_{key.split('_')[0]}"] = index in frontier
    header = ["run", "recipe", "final stage", "metric", "size MB", "speed-up vs parent", "on a frontier"]
    body = [
        [
            row["run"],
            str(row["recipe"]),
            row["stage"],
            f"{row['metric']:.4f}" if row["metric"] is not None else "—",
            f"{row['size_mb']:.1f}" if row["size_mb"] else "—",
            f"{row['speedup']:.2f}x" if row["speedup"] else "—",
            "yes" if row.get("pareto_speedup") or row.get("pareto_size") else "no",
        ]
        for row in rows
    ]
    write_json_atomic(out / "compare.json", {"runs": rows})
    md = ["# prunekit compare", "", markdown_table(header, body), ""]
    md += [line for title, path in plots for line in (f"## {title}", "", f"![{title}]({path.name})", "")]
    write_text_atomic(out / "compare.md", "\n".join(md))
    write_text_atomic(
        out / "compare.html", html_page("prunekit compare", f"{len(rows)} runs", header, body, [], [], plots)
    )
    return out / "compare.md", out / "compare.html"
