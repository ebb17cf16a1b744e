"""Model weights a few tensors at a time: a folder's safetensors files read memory-mapped, and a sharded
output folder written shard by shard (each shard atomically), with Hugging Face's index file."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from prunekit.errors import ModelError, first_line
from prunekit.io import atomic_file, read_json, write_json_atomic

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64,
          "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}  # fmt: skip


class CheckpointReader:
    """The tensors of a model folder's ``model.safetensors`` (or the shards its index names), read on
    demand; nothing is held between reads. ``stored[name]`` is a tensor's dtype on disk."""

    def __init__(self, folder: str | os.PathLike, flag: str = "--model"):
        self.folder, self.where = Path(folder), f"{flag} {folder}"
        if (self.folder / INDEX_FILE).is_file():
            weight_map = read_json(self.folder / INDEX_FILE, "the safetensors index").get("weight_map")
            if not isinstance(weight_map, dict):
                raise ModelError(f"{self.folder / INDEX_FILE}: no 'weight_map' object naming each tensor's file")
            self.files = {name: self.folder / file for name, file in weight_map.items()}
        elif (self.folder / SINGLE_FILE).is_file():
            self.files = dict.fromkeys(self._dtypes(self.folder / SINGLE_FILE), self.folder / SINGLE_FILE)
        else:
            raise ModelError(f"{self.where}: reading layer by layer needs safetensors weights ({SINGLE_FILE} or "
                             f"{INDEX_FILE}); convert the folder with save_pretrained")  # fmt: skip
        missing = sorted({str(path) for path in self.files.values() if not path.is_file()})
        if missing:
            raise ModelError(f"{self.where}: the index names shard files that are missing: {', '.join(missing[:3])}")
        self.stored: dict[str, torch.dtype] = {}  # each tensor's dtype on disk, from the headers
        for path in sorted(set(self.files.values())):
            self.stored.update(self._dtypes(path))

    @staticmethod
    def _dtypes(path: Path) -> dict[str, torch.dtype]:
        try:
            with safe_open(str(path), framework="pt") as handle:
                return {name: DTYPES[handle.get_slice(name).get_dtype()] for name in handle.keys()}
        except Exception as err:  # safetensors raises its own types for a truncated or corrupt header
            raise ModelError(f"{path}: not a readable safetensors file ({first_line(err)})") from None

    @property
    def names(self) -> list[str]:
        return list(self.files)

    def read(self, names: Iterable[str]) -> dict[str, torch.Tensor]:
        """``{name: tensor}`` as stored, on the CPU: each backed by its file's pages (copy on write) until
        converted or dropped, so a tensor read only to be converted is never copied whole."""
        by_file: dict[Path, list[str]] = {}
        for name in names:
            if name not in self.files:
                raise ModelError(f"{self.where}: the weights have no tensor {name}")
            by_file.setdefault(self.files[name], []).append(name)
        tensors = {}
        for path, wanted in by_file.items():
            try:
                with safe_open(str(path), framework="pt") as handle:
                    for name in wanted:
                        tensors[name] = handle.get_tensor(name)
            except Exception as err:
                raise ModelError(f"{path}: cannot read its tensors ({first_line(err)})") from None
        return tensors


def shard_name(number: int, total: int) -> str:
    return f"model-{number:05d}-of-{total:05d}.safetensors"


def write_shard(folder: str | os.PathLike, number: int, total: int, tensors: dict[str, torch.Tensor]) -> None:
    """Write shard ``number`` of ``total`` (1-based) into ``folder`` through a temp file and a rename."""
    tensors = {name: tensor.detach().to("cpu").contiguous() for name, tensor in tensors.items()}
    with atomic_file(Path(folder) / shard_name(number, total)) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})


def write_index(folder: str | os.PathLike, total: int) -> None:
    """The index of ``folder``'s ``total`` shards (all written), from their headers."""
    folder = Path(folder)
    weight_map, size = {}, 0
    for number in range(1, total + 1):
        name = shard_name(number, total)
        with safe_open(str(folder / name), framework="pt") as handle:
            for key in handle.keys():
                piece = handle.get_slice(key)
                weight_map[key] = name
                size += DTYPES[piece.get_dtype()].itemsize * int(torch.Size(piece.get_shape()).numel())
    write_json_atomic(folder / INDEX_FILE, {"metadata": {"total_size": size}, "weight_map": weight_map})
