"""Where a stage runs and in what precision (``--device``, ``--dtype``, ``--save-dtype``; declared once).

One-shot work (calibration, scoring, pruning, surgery), evaluation, perplexity, generation and timing
run on the chosen device in the chosen dtype; SparseGPT's Hessians and updates and Wanda's statistics
stay in float32 (float64 sums) whatever the weights' dtype. Training keeps float32 weights and runs the
Trainer's mixed precision (``bf16`` / ``fp16``) instead of converting them. Saved weights keep the dtype
the stage worked in unless ``--save-dtype`` says otherwise.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from typing import Any

import torch

from prunekit.errors import ConfigError
from prunekit.options import check_options, option

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def device_name(text: str) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (an argparse type)."""
    import argparse
    import re

    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, found {text!r}")
    return text


@dataclass
class DeviceConfig:
    """Where the stage runs and in what precision."""

    device: str = option(
        "auto", "where the model runs: auto (a CUDA GPU when there is one), cpu, cuda or cuda:N", parse=device_name
    )
    dtype: str = option(
        "float32",
        "the weights' precision while working; training stages keep float32 weights and train in mixed precision",
        choices=tuple(DTYPES),
    )
    save_dtype: str | None = option(
        None, "precision of the saved weights (default: the one the stage worked in)", choices=tuple(DTYPES)
    )

    def __post_init__(self) -> None:
        check_options(self)

    def torch_device(self) -> torch.device:
        """The device, ``auto`` resolved; a CUDA device on a machine without one is an error."""
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        device = torch.device(self.device)
        if device.type == "cuda":
            if not torch.cuda.is_available():
                raise ConfigError(f"--device {self.device}: this machine has no CUDA device (torch sees none)")
            if device.index is not None and device.index >= torch.cuda.device_count():
                raise ConfigError(f"--device {self.device}: torch sees {torch.cuda.device_count()} CUDA device(s)")
        return device

    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def for_training(self) -> dict[str, str]:
        """``FinetuneConfig``'s ``device`` and ``precision``: the Trainer puts each process on its own device
        and trains float32 weights in ``dtype``'s mixed precision."""
        device = self.torch_device()
        if device.index is not None:
            raise ConfigError(f"--device {self.device}: training runs each process on its own GPU; pick one with "
                              "CUDA_VISIBLE_DEVICES and pass --device cuda")  # fmt: skip
        if self.dtype == "float16" and device.type == "cpu":
            raise ConfigError("--dtype float16: training in float16 mixed precision needs a GPU; on a CPU: bfloat16")
        return {"device": device.type, "precision": self.dtype}

    def record(self, device: torch.device | None = None) -> dict[str, Any]:
        """summary.json's ``device``, ``dtype`` and ``device_name``."""
        device = device or self.torch_device()
        return {"device": str(device), "dtype": self.dtype, "device_name": describe(device)}


def memory_size(text: str) -> str:
    """A memory size such as ``2GiB``, ``500MB`` or a count of bytes (an argparse type)."""
    import argparse

    from accelerate.utils import convert_file_size_to_int

    try:
        size = convert_file_size_to_int(text)
    except ValueError:
        size = 0
    if size <= 0:
        raise argparse.ArgumentTypeError(f"expected a size such as 2GiB, 500MB or a number of bytes, found {text!r}")
    return text


@dataclass
class OffloadConfig:
    """A model bigger than memory, evaluated or timed through accelerate's big-model loading."""

    max_memory: str | None = option(
        None,
        "a model bigger than memory: hold at most SIZE (e.g. 2GiB) of its weights on --device (and as much in "
        "CPU memory), the rest offloaded to disk and read back module by module in every forward pass "
        "(accelerate's big-model loading, device_map auto: slow, for models that would not fit otherwise)",
        parse=memory_size,
    )
    offload_folder: str | None = option(
        None, "with --max-memory: where offloaded weights go (default: a temporary folder, removed at exit)"
    )

    def __post_init__(self) -> None:
        check_options(self)
        if self.offload_folder and not self.max_memory:
            raise ConfigError("--offload-folder: only with --max-memory (nothing is offloaded without it)")

    def load_options(self) -> dict[str, Any]:
        """``load_model``'s keyword arguments for this config (none without --max-memory)."""
        return {"max_memory": self.max_memory, "offload_folder": self.offload_folder} if self.max_memory else {}


def placement_record(model: Any) -> dict[str, Any]:
    """summary.json's ``placement`` for a model loaded with ``--max-memory``: how many of its modules the
    device map put on each device, ``disk`` for offloaded ones (nothing for a model loaded whole)."""
    from collections import Counter

    placed = getattr(model, "hf_device_map", None)
    return {"placement": dict(Counter(str(d) for d in placed.values()))} if placed else {}


def describe(device: torch.device) -> str:
    """The device's name: the GPU's, or the CPU's."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or "cpu"


def model_device(model: Any) -> torch.device:
    """Where a model's weights are, and its inputs go (the CPU for anything else timed like one: an ONNX
    Runtime session). A model loaded with offloaded weights (``hf_device_map``) runs on its first GPU, or
    the CPU."""
    placed = getattr(model, "hf_device_map", None)
    if placed:  # loaded with a device map (offloaded weights are on "meta")
        gpus = [
            torch.device(d if isinstance(d, str) else f"cuda:{d}") for d in placed.values() if d not in ("cpu", "disk")
        ]
        return gpus[0] if gpus else torch.device("cpu")
    parameters = getattr(model, "parameters", None)
    return next(parameters()).device if parameters is not None else torch.device("cpu")


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """A batch's tensors on ``device`` (other values as they are)."""
    return {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a CUDA timer reads nothing meaningful otherwise)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
