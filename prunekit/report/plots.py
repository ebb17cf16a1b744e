"""Plots written atomically as PNG (matplotlib, no display needed)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after choosing the headless backend

from prunekit.io import atomic_file


def _save_atomic(figure, path: Path) -> None:
    try:
        with atomic_file(path) as tmp:
            figure.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    finally:
        plt.close(figure)


def plot_lottery(rounds: Sequence[dict], metric: str, path: str | os.PathLike, tolerance: float) -> None:
    """Metric vs sparsity for the ticket and each control, with the dense metric and its tolerance band."""
    path = Path(path)
    dense = rounds[0]["ticket"]
    later = rounds[1:]
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.axhline(dense, color="black", linewidth=1, label=f"dense ({dense:.3f})")
    axes.axhspan(dense - tolerance, dense, color="grey", alpha=0.15, label=f"within {tolerance:g} of dense")
    x = [100 * r["sparsity"] for r in later]
    for key, label, style in (
        ("ticket", "ticket (rewound)", "o-"),
        ("random_mask", "random mask", "s--"),
        ("one_shot", "one-shot + fine-tune", "^:"),
    ):
        values = [r.get(key) for r in later]
        if any(v is not None for v in values):
            axes.plot(x, values, style, label=label)
    axes.set_xlabel("sparsity of the pruned matrices (%)")
    axes.set_ylabel(metric)
    axes.set_title("Lottery-ticket rounds")
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3)
    _save_atomic(figure, path)


def plot_ordering(
    orders: Sequence[dict],
    metric: str,
    path: str | os.PathLike,
    control: tuple[float, float],
    x: str = "speedup",
) -> None:
    """Metric (mean ± std over seeds) vs measured speed-up (or ``x="compression"``: dense parameters over
    non-zero ones), one point per order, with the equal-budget dense control as a line and band.
    ``orders``: ``{"order", "mean", "std", x}``."""
    path = Path(path)
    figure, axes = plt.subplots(figsize=(6, 4))
    mean, std = control
    axes.axhline(mean, color="black", linewidth=1, label=f"dense control ({mean:.3f})")
    axes.axhspan(mean - std, mean + std, color="grey", alpha=0.15)
    for row, marker in zip(orders, "osd^v"):
        axes.errorbar(row[x], row["mean"], yerr=row["std"], fmt=marker, capsize=4, label=row["order"])
    axes.set_xlabel(
        "speed-up vs dense (latency ratio)" if x == "speedup" else "compression (dense / non-zero parameters)"
    )
    axes.set_ylabel(metric)
    axes.set_title("LoRA and pruning: which order")
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3)
    _save_atomic(figure, path)


def plot_metric_vs_compression(rows: Sequence, parent, path: Path) -> Path | None:
    """Each stage's metric against its compression (the parent's parameters / its non-zero ones)."""
    points = [r for r in rows if r.metric is not None and r.summary.get("params_nonzero")]
    if not points or parent is None or not parent.summary.get("params_total"):
        return None
    base = parent.summary["params_total"]
    figure, axis = plt.subplots(figsize=(6, 4))
    xs = [base / r.summary["params_nonzero"] for r in points]
    axis.plot(xs, [r.metric for r in points], "o-", color="tab:blue")
    for x, r in zip(xs, points):
        axis.annotate(r.label, (x, r.metric), textcoords="offset points", xytext=(4, 4), fontsize=8)
    axis.set_xlabel("compression (parent params / non-zero params)")
    axis.set_ylabel(points[0].metric_name)
    axis.grid(alpha=0.3)
    _save_atomic(figure, path)
    return path


def plot_layer_heatmaps(rows: Sequence, path: Path) -> Path | None:
    """Per layer and stage: kept attention heads, kept FFN neurons (vs the widest stage) and the
    fraction of non-zero weights in the layer's projections."""
    from prunekit.report.layers import layer_structure

    stages = [(r.label, layer_structure(r.model)) for r in rows if r.model]
    stages = [(label, layers) for label, layers in stages if layers]
    if not stages:
        return None
    depth = max(len(layers) for _, layers in stages)
    panels = []
    for key, title in (("heads", "attention heads kept"), ("ffn", "FFN neurons kept"), ("nonzero", "non-zero weights")):
        widest = [
            max((layers[i][key] for _, layers in stages if i < len(layers)), default=1) or 1 for i in range(depth)
        ]
        grid = [[layers[i][key] / (1 if key == "nonzero" else widest[i]) if i < len(layers) else float("nan")
                 for i in range(depth)] for _, layers in stages]  # fmt: skip
        panels.append((title, grid))
    figure, axes = plt.subplots(1, 3, figsize=(14, 1.2 + 0.45 * len(stages)), squeeze=False)
    for index, (axis, (title, grid)) in enumerate(zip(axes[0], panels)):
        image = axis.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        axis.set_title(title, fontsize=9)
        axis.set_yticks(range(len(stages)), [label for label, _ in stages] if index == 0 else [], fontsize=8)
        axis.set_xticks(range(0, depth, max(1, depth // 10)))
        axis.set_xlabel("layer")
    figure.colorbar(image, ax=axes[0].tolist(), fraction=0.02)
    _save_atomic(figure, path)
    return path


def plot_loss_curves(rows: Sequence, path: Path) -> Path | None:
    """The training loss of every stage that trained, against its optimizer step."""
    curves = [(r.label, (r.summary.get("train") or {}).get("loss_curve")) for r in rows]
    curves = [(label, curve) for label, curve in curves if curve]
    if not curves:
        return None
    figure, axis = plt.subplots(figsize=(6, 4))
    for label, curve in curves:
        axis.plot([step for step, _ in curve], [loss for _, loss in curve], label=label)
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("training loss")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    _save_atomic(figure, path)
    return path


def plot_pareto(points: Sequence[tuple[float, float, str]], frontier: Sequence[int], key: str, title: str,
                path: Path) -> Path:  # fmt: skip
    """Runs as points (x = speed-up or size, y = metric), the Pareto frontier joined and marked."""
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.scatter([x for x, _, _ in points], [y for _, y, _ in points], color="tab:gray")
    best = sorted((points[i] for i in frontier), key=lambda p: p[0])
    axis.plot([x for x, _, _ in best], [y for _, y, _ in best], "o-", color="tab:red", label="Pareto frontier")
    for x, y, name in points:
        axis.annotate(Path(name).name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    axis.set_xlabel("speed-up vs parent (x)" if key == "speedup" else "size on disk (MB)")
    axis.set_ylabel("metric")
    axis.set_title(title)
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    _save_atomic(figure, path)
    return path
