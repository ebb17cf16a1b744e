"""Compact storage for unstructured-sparse models: a bitmask plus the kept values per pruned matrix.

Layout of ``model.sparse.safetensors`` (metadata ``format = prunekit-bitmask-v1``):
- ``NAME.__bitmask``: uint8, the flattened keep-mask packed 8 per byte (numpy ``packbits``, big-endian bits);
- ``NAME.__values``: the kept weights in row-major order, in the parameter's dtype;
- ``NAME.__shape``: int64, the dense shape;
- every other tensor as in ``state_dict()``.
A matrix at sparsity s costs (1 - s) * 4 + 1/8 bytes per weight in float32, instead of 4. Loading
rebuilds exactly the dense-with-zeros model. (compressed-tensors offers a similar bitmask format
tied to its quantization configs; this one keeps the loader to a few lines and adds no dependency.)
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoConfig, PreTrainedModel

from prunekit.pruning.masks import SPARSE_FILE, MaskSet, pack_bits, unpack_bits
from prunekit.weights import load_state_dict_strict

FORMAT = "prunekit-bitmask-v1"


def save_sparse(model: PreTrainedModel, masks: MaskSet, folder: str | os.PathLike) -> None:
    """Write config + ``model.sparse.safetensors`` into ``folder``."""
    folder = Path(folder)
    model.config.save_pretrained(folder)
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() in seen:  # tied weights are restored by tie_weights() on load
            continue
        seen.add(tensor.data_ptr())
        mask = masks.masks.get(name)
        if mask is None:
            tensors[name] = tensor.contiguous()
            continue
        tensors[f"{name}.__bitmask"] = pack_bits(mask)
        tensors[f"{name}.__values"] = tensor.flatten()[mask.flatten()].contiguous()
        tensors[f"{name}.__shape"] = torch.tensor(list(tensor.shape), dtype=torch.int64)
    save_file(tensors, str(folder / SPARSE_FILE), metadata={"format": FORMAT})


def load_sparse_state_dict(folder: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The dense ``state_dict`` (pruned weights as exact zeros) stored in ``folder``."""
    state: dict[str, torch.Tensor] = {}
    with safe_open(str(Path(folder) / SPARSE_FILE), framework="pt") as handle:
        keys = set(handle.keys())
        for key in keys:
            if not key.endswith(".__bitmask"):
                if not key.endswith((".__values", ".__shape")):
                    state[key] = handle.get_tensor(key)
                continue
            name = key[: -len(".__bitmask")]
            mask = unpack_bits(handle.get_tensor(key), handle.get_tensor(f"{name}.__shape").tolist())
            values = handle.get_tensor(f"{name}.__values")
            if values.numel() != int(mask.sum()):
                raise ValueError(f"{name}: {values.numel()} values for {int(mask.sum())} kept weights")
            dense = torch.zeros(mask.shape, dtype=values.dtype)
            dense[mask] = values
            state[name] = dense
    return state


def load_sparse(folder: str | os.PathLike, model_class: type | None = None) -> PreTrainedModel:
    """The model rebuilt from the sparse format, bit-exact: as ``model_class`` (an Auto class; default
    ``AutoModelForSequenceClassification``, or ``AutoModelForCausalLM`` for a folder saved as one).

    Loading is strict: every tensor of the model must be in the file, except the second name of a
    tied pair (restored by ``tie_weights``). Anything missing or unexpected is a ValueError.
    """
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(folder)
    if model_class is None:
        causal = any(name.endswith("ForCausalLM") for name in config.architectures or ())
        model_class = AutoModelForCausalLM if causal else AutoModelForSequenceClassification
    model = model_class.from_config(config, dtype=torch.float32)
    load_state_dict_strict(model, load_sparse_state_dict(folder))
    return model.eval()
