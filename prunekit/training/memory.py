"""Peak memory of the training loop itself (model, optimizer state, activations), not of loading or
evaluating: the process's resident high-water mark is reset when training begins (Linux:
``/proc/self/clear_refs``) and read when it ends; on a GPU, PyTorch's peak allocated memory likewise."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import TrainerCallback

STATUS, CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")


def _high_water_mb() -> float | None:
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)  # kB
    except OSError:
        pass
    return None


def reset_high_water() -> bool:
    """Start the process's resident high-water mark afresh; False where the system cannot."""
    try:
        CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


class TrainingPeakMemory(TrainerCallback):
    """``record``: ``peak_rss_mb`` (and ``peak_gpu_mb`` on CUDA) between the start and end of training;
    ``rss_reset`` False where the mark could not be reset (the figure then also covers what came before)."""

    def __init__(self) -> None:
        self.record: dict = {}

    def on_train_begin(self, args, state, control, **kwargs):
        self.record = {"rss_reset": reset_high_water()}
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def on_train_end(self, args, state, control, **kwargs):
        self.record["peak_rss_mb"] = _high_water_mb()
        if torch.cuda.is_available():
            self.record["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
