"""This process's resident-memory high-water mark, read from ``/proc/self/status`` (VmHWM).

Not ``getrusage``'s ``ru_maxrss``: Linux carries a parent's high-water mark over into its child across
``exec``, so a prunekit process started by a bigger one (pytest, a recipe runner, a bench script) would
report the parent's peak. The mark can be reset (``/proc/self/clear_refs``) to measure one phase, such as
the training loop; the peak before a reset is remembered, so :func:`peak_rss_mb` stays the whole
process's."""

from __future__ import annotations

import resource
from pathlib import Path

STATUS, CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")
_before_reset_mb = 0.0


def high_water_mb() -> float | None:
    """VmHWM in MiB: the peak since the process started or since the last :func:`reset_high_water`;
    None where the system does not report it."""
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)  # kB
    except OSError:
        pass
    return None


def reset_high_water() -> bool:
    """Start the resident high-water mark afresh (the peak so far is kept for :func:`peak_rss_mb`);
    False where the system cannot."""
    global _before_reset_mb
    current = high_water_mb()
    try:
        CLEAR_REFS.write_text("5")
    except OSError:
        return False
    _before_reset_mb = max(_before_reset_mb, current or 0.0)
    return True


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB."""
    mark = high_water_mb()
    if mark is None:  # not Linux: ru_maxrss is bytes on macOS
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 1)
    return max(mark, _before_reset_mb)
