"""Masks as data: boolean keep-masks for named weights, applied in place and held during training.

Holding a mask costs no forward hook: gradients of pruned weights are zeroed before each optimizer
step, the optimizer's moments at pruned positions are cleared when a mask grows, and the weights are
re-zeroed after the step, so they stay exactly zero under any optimizer.

On disk (``prunekit_masks.safetensors``, metadata ``format = prunekit-maskbits-v1``) each mask is
packed 8 per byte (numpy ``packbits``) with its shape in the metadata; a model saved in the sparse
format carries no masks file, since its bitmasks are the masks. Files of the older 1-byte-per-weight
layout still load.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from prunekit.errors import ModelError, first_line

MASKS_FILE = "prunekit_masks.safetensors"
MASKS_FORMAT = "prunekit-maskbits-v1"
SPARSE_FILE = "model.sparse.safetensors"  # see prunekit.pruning.sparse_format


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.packbits(mask.flatten().cpu().numpy()))


def unpack_bits(bits: torch.Tensor, shape: list[int]) -> torch.Tensor:
    numel = int(np.prod(shape))
    return torch.from_numpy(np.unpackbits(bits.numpy(), count=numel).astype(bool)).reshape(shape)


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

    def sparsity_per_prefix(self, prefixes: list[str]) -> list[float | None]:
        """The pruned fraction of the masked weights under each name prefix (e.g. each transformer layer's);
        None where no mask has the prefix."""
        result = []
        for prefix in prefixes:
            masks = [mask for name, mask in self.masks.items() if name.startswith(prefix)]
            total = sum(mask.numel() for mask in masks)
            result.append(round(1.0 - sum(int(mask.sum()) for mask in masks) / total, 6) if total else None)
        return result

    def report(self) -> dict:
        """The summary.json fields: ``sparsity`` and ``sparsity_per_module``."""
        return {"sparsity": self.sparsity(), "sparsity_per_module": self.sparsity_per_module()}

    def check_fits(self, model: nn.Module, source: str) -> MaskSet:
        """Every mask names a parameter of ``model`` with the same shape; else a ModelError naming ``source``."""
        params = dict(model.named_parameters())
        for name, mask in self.masks.items():
            if name not in params:
                raise ModelError(f"{source}: has a mask for {name}, which the model does not have")
            if tuple(mask.shape) != tuple(params[name].shape):
                raise ModelError(
                    f"{source}: mask for {name} has shape {tuple(mask.shape)}, the weight {tuple(params[name].shape)}"
                )
        return self

    def save(self, folder: str | os.PathLike) -> None:
        """Write the masks as bits (``MASKS_FILE``)."""
        save_mask_bits({name: pack_bits(mask) for name, mask in self.masks.items()},
                       {name: list(mask.shape) for name, mask in self.masks.items()}, folder)  # fmt: skip

    @classmethod
    def load(cls, folder: str | os.PathLike, model: nn.Module | None = None) -> MaskSet | None:
        """The masks saved with a model folder (its masks file, or the bitmasks of its sparse format),
        or None if it has none. With ``model`` they are checked to fit it."""
        folder = Path(folder)
        path = folder / MASKS_FILE
        try:
            if path.is_file():
                masks = cls(_read_masks_file(path))
            elif (folder / SPARSE_FILE).is_file():
                path = folder / SPARSE_FILE
                masks = cls(_read_sparse_bitmasks(path))
            else:
                return None
        except ModelError:
            raise
        except Exception as err:  # safetensors raises its own error types for truncated/corrupt files
            raise ModelError(f"{path}: cannot read the masks ({first_line(err)})") from None
        return masks.check_fits(model, str(path)) if model is not None else masks


def save_mask_bits(bits: dict[str, torch.Tensor], shapes: dict[str, list[int]], folder: str | os.PathLike) -> None:
    """Write masks already packed (``pack_bits``) as ``folder/MASKS_FILE``."""
    save_file(bits, str(Path(folder) / MASKS_FILE), metadata={"format": MASKS_FORMAT, "shapes": json.dumps(shapes)})


def read_masks(folder: str | os.PathLike, wanted: Callable[[str], bool]) -> dict[str, torch.Tensor]:
    """The masks whose names are ``wanted`` in ``folder``'s masks file (none without one): a few at a time."""
    path = Path(folder) / MASKS_FILE
    if not path.is_file():
        return {}
    try:
        return _read_masks_file(path, wanted)
    except Exception as err:  # safetensors raises its own error types for truncated/corrupt files
        raise ModelError(f"{path}: cannot read the masks ({first_line(err)})") from None


def _read_masks_file(path: Path, wanted: Callable[[str], bool] = lambda name: True) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as handle:
        names = [name for name in handle.keys() if wanted(name)]
        metadata = handle.metadata() or {}
        if metadata.get("format") != MASKS_FORMAT:  # the older 1-byte-per-weight layout
            return {name: handle.get_tensor(name).to(torch.bool) for name in names}
        shapes = json.loads(metadata["shapes"])
        return {name: unpack_bits(handle.get_tensor(name), shapes[name]) for name in names}


def _read_sparse_bitmasks(path: Path) -> dict[str, torch.Tensor]:
    masks = {}
    with safe_open(str(path), framework="pt") as handle:
        for key in handle.keys():
            if key.endswith(".__bitmask"):
                name = key[: -len(".__bitmask")]
                masks[name] = unpack_bits(handle.get_tensor(key), handle.get_tensor(f"{name}.__shape").tolist())
    return masks
