"""Masks as data: boolean keep-masks for named weights, applied in place and held during training.

Holding a mask costs no forward hook: gradients of pruned weights are zeroed before each optimizer
step, the optimizer's moments at pruned positions are cleared when a mask grows, and the weights are
re-zeroed after the step, so they stay exactly zero under any optimizer.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from prunekit.errors import ModelError

MASKS_FILE = "prunekit_masks.safetensors"


class MaskSet:
    """``{parameter name: bool keep-mask}`` for one model."""

    def __init__(self, masks: dict[str, torch.Tensor]):
        self.masks = {name: mask.to(torch.bool) for name, mask in masks.items()}

    def __len__(self) -> int:
        return len(self.masks)

    def _params(self, model: nn.Module) -> dict[str, nn.Parameter]:
        params = dict(model.named_parameters())
        missing = [name for name in self.masks if name not in params]
        if missing:
            raise ModelError(f"masks name parameters the model does not have: {', '.join(missing[:3])}")
        return {name: params[name] for name in self.masks}

    @torch.no_grad()
    def apply(self, model: nn.Module) -> None:
        """Zero every pruned weight in place."""
        for name, param in self._params(model).items():
            param.mul_(self.masks[name].to(param.device))

    @torch.no_grad()
    def mask_gradients(self, model: nn.Module) -> None:
        for name, param in self._params(model).items():
            if param.grad is not None:
                param.grad.mul_(self.masks[name].to(param.grad.device))

    @torch.no_grad()
    def clear_optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Zero per-weight optimizer state (AdamW's moments) at pruned positions, so nothing revives them."""
        for name, param in self._params(model).items():
            for value in optimizer.state.get(param, {}).values():
                if torch.is_tensor(value) and value.shape == param.shape:
                    value.mul_(self.masks[name].to(value.device))

    def merged_with(self, other: MaskSet) -> MaskSet:
        """Masks only ever prune more: a weight pruned in either set stays pruned."""
        merged = dict(self.masks)
        for name, mask in other.masks.items():
            merged[name] = merged[name] & mask if name in merged else mask
        return MaskSet(merged)

    def sparsity_per_module(self) -> dict[str, float]:
        return {name: round(1.0 - mask.float().mean().item(), 6) for name, mask in self.masks.items()}

    def sparsity(self) -> float:
        """Fraction of masked weights that are pruned, over all masked weights."""
        total = sum(mask.numel() for mask in self.masks.values())
        kept = sum(int(mask.sum()) for mask in self.masks.values())
        return round(1.0 - kept / total, 6) if total else 0.0

    def report(self) -> dict:
        """The summary.json fields: ``sparsity`` and ``sparsity_per_module``."""
        return {"sparsity": self.sparsity(), "sparsity_per_module": self.sparsity_per_module()}

    def save(self, folder: str | os.PathLike) -> None:
        save_file({name: mask.contiguous() for name, mask in self.masks.items()}, str(Path(folder) / MASKS_FILE))

    @classmethod
    def load(cls, folder: str | os.PathLike) -> MaskSet | None:
        """The masks saved with a model folder, or None if it has none."""
        path = Path(folder) / MASKS_FILE
        return cls(load_file(str(path))) if path.is_file() else None
