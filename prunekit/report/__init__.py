"""Reports: plots of measured results."""

from prunekit.report.plots import plot_lottery

__all__ = ["plot_lottery"]
