"""``prunekit report DIR``: a run's ``report.md`` and a self-contained ``report.html`` (plots embedded).

One row per stage: its metric, parameters (total, removed from the parent, zero but still stored),
size on disk, FLOPs and latency ratios from the run's bench stage; then plots: metric vs compression,
per-layer kept heads / FFN neurons / non-zero weights (heatmaps), and the training-loss curves.
"""

from __future__ import annotations

import base64
import html
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from prunekit.errors import ConfigError
from prunekit.io import read_json
from prunekit.stages.bench import parent_name

REPORT_MD, REPORT_HTML, PLOTS_DIR = "report.md", "report.html", "plots"


@dataclass
class StageRow:
    folder: str
    name: str
    method: str
    role: str | None
    summary: dict
    model: str | None
    metric: float | None = None
    metric_name: str | None = None
    timing: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.name + (f" ({self.role})" if self.role else "")


def read_run(out: str | os.PathLike) -> tuple[dict, list[StageRow]]:
    """The run record and one row per finished stage, in order. Models are found in the stage folders
    (a copied or moved run reads the same); a damaged record is an error naming its file."""
    from prunekit.recipes.run_folder import RUN_FILE, STAGE_FILE, TICKET_DIR

    out = Path(out)
    if not (out / RUN_FILE).is_file():
        raise ConfigError(f"{out}: not a prunekit run folder (no {RUN_FILE}); pass the --out of `prunekit run`")
    run = read_json(out / RUN_FILE, "the run's inputs")
    records = [(folder, read_json(folder / STAGE_FILE, "a finished stage's record"))
               for folder in sorted(path for path in out.iterdir() if (path / STAGE_FILE).is_file())]  # fmt: skip
    # stable: a run made before records had an index stays in folder order
    records.sort(key=lambda item: item[1]["index"] if isinstance(item[1].get("index"), int) else 0)
    rows = []
    for folder, record in records:
        summary = read_json(folder / "summary.json", f"stage {folder.name}'s result")
        stage = record.get("stage")
        if not isinstance(stage, dict) or not isinstance(stage.get("name"), str) or record.get("method") is None:
            raise ConfigError(f"{folder / STAGE_FILE}: not a stage record (no stage name or method)")
        model = None
        if record.get("model") is not None:
            model = str(folder / TICKET_DIR) if record["method"] == "lottery" else str(folder)
        if record["method"] == "lottery" and model:
            ticket = read_json(Path(model) / "summary.json", "the winning ticket's result")
            summary = {**ticket, "train": summary.get("train")}
        row = StageRow(folder.name, stage["name"], record["method"], stage.get("role"), summary, model)
        metric_name = summary.get("main_metric")
        metrics = summary.get("metrics")
        if metric_name and isinstance(metrics, dict) and isinstance(metrics.get(metric_name), (int, float)):
            row.metric, row.metric_name = metrics[metric_name], metric_name
        rows.append(row)
    timings = next((r.summary.get("models") for r in reversed(rows) if r.method == "bench"), None) or {}
    for row in rows:
        row.timing = timings.get(row.name, {}) if isinstance(timings, dict) else {}
    return run, rows


def _parent(rows: list[StageRow]) -> StageRow | None:
    name = parent_name([(row.name, row.role) for row in rows if row.model])
    return next((row for row in rows if row.name == name), None)


def _fmt(value, spec: str = ",", suffix: str = "") -> str:
    return "—" if value is None else f"{value:{spec}}{suffix}"


def table(rows: list[StageRow]) -> tuple[list[str], list[list[str]]]:
    parent = _parent(rows)
    parent_total = parent.summary.get("params_total") if parent else None
    header = [
        "stage",
        "method",
        "metric",
        "params",
        "removed",
        "zero (masked)",
        "size MB",
        "GFLOPs",
        "speed-up vs parent",
        "vs control",
    ]
    body = []
    for row in rows:
        if row.method in ("bench", "export"):
            continue
        s = row.summary
        total, nonzero = s.get("params_total"), s.get("params_nonzero")
        removed = parent_total - total if parent_total and total else None
        size = s.get("size_bytes")
        flops = row.timing.get("flops")
        body.append(
            [
                row.label,
                row.method,
                f"{row.metric:.4f} {row.metric_name}" if row.metric is not None else "—",
                _fmt(total),
                _fmt(removed),
                _fmt(total - nonzero if total is not None and nonzero is not None else None),
                _fmt(size / 1e6 if size else None, ".1f"),
                _fmt(flops / 1e9 if flops else None, ".3g"),
                _fmt(row.timing.get("ratio_vs_parent"), ".2f", "x"),
                _fmt(row.timing.get("ratio_vs_control"), ".2f", "x"),
            ]
        )
    return header, body


def markdown_table(header: list[str], body: list[list[str]]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in cells) + " |" for cells in body]
    return "\n".join(lines)


def code(value) -> str:
    """``value`` as Markdown inline code: shown literally whatever it holds (backticks, ``#``, ``*``, line
    breaks), so a path cannot become a heading, a link or markup."""
    text = str(value).replace("\n", " ")
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def export_lines(rows: list[StageRow]) -> list[str]:
    lines = []
    for row in rows:
        s = row.summary
        if row.method == "export" and s.get("format") == "onnx":
            lines.append(
                f"- {row.name}: `{row.folder}/model.onnx`, max |ONNX − PyTorch| {s['max_abs_diff']:.1e} "
                f"(atol {s['atol']:g}); ONNX Runtime {s['ratio_vs_torch']:.2f}x PyTorch's speed at batch "
                f"{s['onnxruntime_latency_ms']['batch_size']} x {s['onnxruntime_latency_ms']['seq_len']}"
            )
        elif row.method == "export":
            lines.append(f"- {row.name}: Hugging Face model folder `{row.folder}/model`")
    return lines


def write_report(out: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``report.md`` (plots in ``plots/``) and ``report.html`` (plots embedded) into ``out``."""
    from prunekit.io import write_text_atomic
    from prunekit.report.plots import plot_layer_heatmaps, plot_loss_curves, plot_metric_vs_compression

    out = Path(out)
    run, rows = read_run(out)
    (out / PLOTS_DIR).mkdir(exist_ok=True)
    plots = [
        ("Metric vs compression", plot_metric_vs_compression(rows, _parent(rows), out / PLOTS_DIR / "metric.png")),
        ("Per-layer structure", plot_layer_heatmaps(rows, out / PLOTS_DIR / "layers.png")),
        ("Training loss", plot_loss_curves(rows, out / PLOTS_DIR / "loss.png")),
    ]
    plots = [(title, path) for title, path in plots if path is not None]
    header, body = table(rows)
    bench = next((r.summary for r in rows if r.method == "bench"), None)
    notes = []
    if bench:
        notes.append(
            f"Latency: forward passes at batch {bench['batch_size']} x {bench['seq_len']} tokens, every "
            "model timed interleaved in one process (the bench stage); > 1x is faster."
        )
    notes.append(
        "'removed': parameters physically cut out relative to the parent; 'zero (masked)': weights "
        "set to zero but still stored (unstructured pruning)."
    )
    title = f"prunekit run: {run.get('recipe')}"
    intro = f"Model {code(run.get('model'))}, data {code(run.get('data'))}, started {run.get('started')}."
    exports = export_lines(rows)
    md = [f"# prunekit run: {code(run.get('recipe'))}", "", intro, "", markdown_table(header, body), "", *notes, ""]
    if exports:
        md += ["## Exports", "", *exports, ""]
    for caption, path in plots:
        md += [f"## {caption}", "", f"![{caption}]({PLOTS_DIR}/{path.name})", ""]
    write_text_atomic(out / REPORT_MD, "\n".join(md))
    write_text_atomic(out / REPORT_HTML, html_page(title, intro, header, body, notes, exports, plots))
    return out / REPORT_MD, out / REPORT_HTML


STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
    "td:first-child,th:first-child,td:nth-child(2){text-align:left}img{max-width:100%}"
)


def html_page(title, intro, header, body, notes, exports, plots) -> str:
    esc = html.escape
    rows = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>" for cells in body)
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{esc(title)}</title><style>{STYLE}</style></head>",
        f"<body><h1>{esc(title)}</h1><p>{esc(intro)}</p>",
        "<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + f"</tr>{rows}</table>",
        *(f"<p>{esc(note)}</p>" for note in notes),
    ]
    if exports:
        parts.append("<h2>Exports</h2><ul>" + "".join(f"<li>{esc(line[2:])}</li>" for line in exports) + "</ul>")
    for caption, path in plots:
        data = base64.b64encode(path.read_bytes()).decode()
        parts.append(f"<h2>{esc(caption)}</h2><img alt='{esc(caption)}' src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    return "\n".join(parts)
