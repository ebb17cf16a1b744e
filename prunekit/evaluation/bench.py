"""CPU latency and FLOPs of a forward pass; A-vs-B ratios measured in one interleaved run."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import PreTrainedModel

from prunekit.devices import model_device, synchronize

# how every latency is timed unless a command's timing flags say otherwise (prunekit bench, export, the
# latency tables and speed-ups of compress / study / adaptive pruning): one shape, threads and run counts
SHAPE = (32, 128)  # batch x tokens
THREADS = 2
WARMUP = 3
REPEATS = 20


class TimingRecord:
    """A dataclass of measurements as summary.json stores them: floats rounded to 4 decimals."""

    def as_dict(self) -> dict[str, float | int]:
        return {key: round(value, 4) if isinstance(value, float) else value for key, value in asdict(self).items()}


@dataclass
class LatencyStats(TimingRecord):
    """Milliseconds per forward pass over ``repeats`` timed runs after warm-up."""

    median: float
    min: float
    max: float
    mean: float
    stdev: float
    repeats: int
    batch_size: int
    seq_len: int
    threads: int


def make_inputs(model: PreTrainedModel, batch_size: int, seq_len: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A fixed random batch of token ids (no padding), the shape every timed run uses."""
    generator = torch.Generator().manual_seed(seed)
    vocab = model.get_input_embeddings().num_embeddings
    input_ids = torch.randint(min(1000, vocab - 1), vocab, (batch_size, seq_len), generator=generator)
    device = model_device(model)
    return {"input_ids": input_ids.to(device), "attention_mask": torch.ones_like(input_ids).to(device)}


def count_flops(model: PreTrainedModel, inputs: dict[str, torch.Tensor]) -> int:
    """FLOPs of one forward pass on ``inputs`` (matmuls and attention, as torch counts them)."""
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(**inputs)
    return int(counter.get_total_flops())


def measure_latency(
    models: Sequence[PreTrainedModel],
    inputs: Sequence[dict[str, torch.Tensor]],
    *,
    threads: int = THREADS,
    warmup: int = WARMUP,
    repeats: int = REPEATS,
) -> list[LatencyStats]:
    """Time each model's forward pass, interleaved A B A B so drift hits every model alike."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    timings: list[list[float]] = [[] for _ in models]
    try:
        for model in models:
            model.eval()
        with torch.inference_mode():
            for round_index in range(warmup + repeats):
                for model, batch, times in zip(models, inputs, timings):
                    device = model_device(model)
                    synchronize(device)
                    start = time.perf_counter()
                    model(**batch)
                    synchronize(device)
                    elapsed = (time.perf_counter() - start) * 1000.0
                    if round_index >= warmup:
                        times.append(elapsed)
    finally:
        torch.set_num_threads(previous_threads)
    batch_size, seq_len = inputs[0]["input_ids"].shape
    return [
        LatencyStats(
            median=statistics.median(times),
            min=min(times),
            max=max(times),
            mean=statistics.fmean(times),
            stdev=statistics.stdev(times) if len(times) > 1 else 0.0,
            repeats=repeats,
            batch_size=int(batch_size),
            seq_len=int(seq_len),
            threads=threads,
        )
        for times in timings
    ]


def nm_pattern(masks: dict[str, torch.Tensor]) -> str | None:
    """``"N:M"`` when every mask keeps exactly N of each M consecutive input weights (M 4 or 8), else None."""
    for m in (4, 8):
        if not masks or any(mask.dim() != 2 or mask.shape[1] % m for mask in masks.values()):
            continue
        counts = {int(c) for mask in masks.values() for c in mask.view(mask.shape[0], -1, m).sum(-1).unique()}
        if len(counts) == 1 and 0 < (n := counts.pop()) < m:
            return f"{n}:{m}"
    return None


def sparse_kernels(pattern: str | None, device: torch.device) -> dict | None:
    """summary.json's ``sparse_kernels`` for an N:M model: whether its timing used sparse kernels, and why not."""
    if pattern is None:
        return None
    why = (f"{pattern} zeros buy size (--save-format sparse), not speed, on a CPU: PyTorch has no N:M CPU kernels, "
           "so the model ran dense") if device.type == "cpu" else (
           "prunekit bench does not yet run PyTorch's semi-structured sparse CUDA kernels: timed dense")  # fmt: skip
    return {"pattern": pattern, "used": False, "why": why}
