"""Reports: plots of measured results."""

from prunekit.report.plots import plot_lottery, plot_ordering

__all__ = ["plot_lottery", "plot_ordering"]
