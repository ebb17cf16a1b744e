"""Memory: this process's resident high-water mark, read from ``/proc/self/status`` (VmHWM), and the
estimates behind the one-line warning before a pass that would not fit.

Not ``getrusage``'s ``ru_maxrss``: Linux carries a parent's high-water mark over into its child across
``exec``, so a prunekit process started by a bigger one (pytest, a recipe runner, a bench script) would
report the parent's peak. The mark can be reset (``/proc/self/clear_refs``) to measure one phase, such as
the training loop; the peak before a reset is remembered, so :func:`peak_rss_mb` stays the whole
process's."""

from __future__ import annotations

import logging
import resource
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

STATUS, CLEAR_REFS, MEMINFO = Path("/proc/self/status"), Path("/proc/self/clear_refs"), Path("/proc/meminfo")
logger = logging.getLogger(__name__)
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


def available_mb() -> float | None:
    """Memory the system can give this process now without swapping (MemAvailable), in MiB; None where
    it is not reported."""
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def activation_bytes(model: torch.nn.Module, tokens: int, sequence: int, checkpointed: bool = False) -> int:
    """An estimate of what one forward and backward pass over ``tokens`` tokens (in sequences of ``sequence``)
    keeps for the backward pass: per layer and token about 10 hidden-wide and 5 FFN-wide float32 values,
    plus the heads' attention probabilities (heads x sequence) — only the layers' inputs and one layer's
    worth with activation checkpointing."""
    from prunekit.adapters import get_adapter

    model = model.get_base_model() if hasattr(model, "get_base_model") else model  # under PEFT's wrapper
    hidden = model.get_input_embeddings().embedding_dim
    layers = get_adapter(model).layers()
    if not layers:
        return 0
    per_layer = [10 * hidden + 5 * layer.ffn.num_neurons + layer.attention.num_heads * sequence for layer in layers]
    values = len(layers) * hidden + max(per_layer) if checkpointed else sum(per_layer)
    return 4 * tokens * values


def warn_if_short(needed_bytes: int, what: str, remedy: str) -> bool:
    """Say in one line (a warning) when ``what`` needs more memory than is available, and what lowers it;
    True when it did."""
    available = available_mb()
    needed = needed_bytes / 2**20
    if available is None or needed <= available:
        return False
    logger.warning(f"{what} needs about {needed / 1024:.1f} GiB (estimated from the model's shapes) but "
                   f"{available / 1024:.1f} GiB is available: it may be killed for memory; {remedy}")  # fmt: skip
    return True
