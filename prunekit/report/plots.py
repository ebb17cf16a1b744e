"""Plots written atomically as PNG (matplotlib, no display needed)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after choosing the headless backend


def _save_atomic(figure, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        figure.savefig(tmp, dpi=120, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        plt.close(figure)
        if os.path.exists(tmp):
            os.unlink(tmp)


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
