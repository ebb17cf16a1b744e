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


def describe(device: torch.device) -> str:
    """The device's name: the GPU's, or the CPU's."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or "cpu"


def model_device(model: Any) -> torch.device:
    """Where a model's weights are (the CPU for anything else timed like one: an ONNX Runtime session)."""
    parameters = getattr(model, "parameters", None)
    return next(parameters()).device if parameters is not None else torch.device("cpu")


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """A batch's tensors on ``device`` (other values as they are)."""
    return {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a CUDA timer reads nothing meaningful otherwise)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
