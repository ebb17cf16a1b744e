"""Peak memory of the training loop itself (model, optimizer state, activations), not of loading or
evaluating: the process's resident high-water mark is reset when training begins (Linux:
``/proc/self/clear_refs``) and read when it ends; on a GPU, PyTorch's peak allocated memory likewise."""

from __future__ import annotations

import torch
from transformers import TrainerCallback

from prunekit.memory import high_water_mb, reset_high_water


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
        self.record["peak_rss_mb"] = high_water_mb()
        if torch.cuda.is_available():
            self.record["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
