"""Layer-streamed one-shot pruning: a model bigger than memory pruned with one transformer layer resident.

The model is built empty (``accelerate.init_empty_weights``: parameters on the meta device, buffers
real). The calibration batches run through the modules before the first layer, which get their weights
from the input's safetensors when first called and lose them again once the first layer's inputs are
captured. Then each layer in turn is read in ``dtype`` on ``device``, pruned by the very code of the
resident pass (``methods.sequential.prune_and_advance``), run over the calibration inputs to make the next
layer's, written to its own output shard in its stored dtype (or ``save_dtype``), and freed. Peak memory
is one layer, its statistics and the calibration activations (the embeddings while capturing), whatever
the depth.

After each layer the next layer's inputs and the masks so far are saved beside the shards
(``STATE_FILE``), so a killed run resumes at the next unfinished layer and writes the same bytes as an
uninterrupted one.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from prunekit.adapters import get_adapter
from prunekit.errors import ConfigError, ModelError
from prunekit.io import atomic_file
from prunekit.methods.magnitude import MagnitudeConfig, resolve_targets
from prunekit.methods.sequential import (
    Inputs,
    LayerPruning,
    first_layer_inputs,
    layer_targets,
    owl_layer_sparsities,
    prune_and_advance,
)
from prunekit.pruning.masks import pack_bits, read_masks, save_mask_bits
from prunekit.pruning.select import parse_nm
from prunekit.shards import CheckpointReader, write_index, write_shard

logger = logging.getLogger(__name__)

STATE_FILE = "prunekit-stream-state.pt"
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


@dataclass
class StreamState:
    """Where a streamed pass stands: the next layer to prune, its inputs, every layer's sparsity, and the
    masks (packed bits) and counts of the layers done."""

    next_layer: int = 0
    inputs: Inputs | None = None
    dense_inputs: Inputs | None = None  # the dense model's, for an asymmetric fit
    sparsities: list[float] = field(default_factory=list)
    bits: dict[str, torch.Tensor] = field(default_factory=dict)
    shapes: dict[str, list[int]] = field(default_factory=dict)
    kept: dict[str, int] = field(default_factory=dict)
    layer_seconds: list[float] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: {"params": 0, "nonzero": 0})

    def save(self, folder: Path) -> None:
        with atomic_file(folder / STATE_FILE) as tmp:
            torch.save(self.__dict__, tmp)

    @classmethod
    def load(cls, folder: Path) -> StreamState | None:
        path = folder / STATE_FILE
        if not path.is_file():
            return None
        try:  # written by this module (activations and masks): not a file from elsewhere
            return cls(**torch.load(path, weights_only=False))
        except Exception as err:
            raise ModelError(f"{path}: cannot read the saved progress ({err}); start again with --overwrite") from None


def empty_model(folder: str, task: Any, dtype: torch.dtype, device: torch.device) -> nn.Module:
    """The model of ``folder`` with every parameter on the meta device and its buffers on ``device``."""
    from accelerate import init_empty_weights

    from prunekit.models import load_config, model_class

    config = load_config(folder)
    with init_empty_weights():
        model = model_class(config, task).from_config(config, dtype=dtype)
    for module in model.modules():
        for name, buffer in module._buffers.items():
            if buffer is not None and not buffer.is_meta:
                module._buffers[name] = buffer.to(device)
    return model.eval()


class _Loader:
    """Puts a module's weights from the checkpoint on the device, in the working dtype, and takes them off."""

    def __init__(self, reader: CheckpointReader, device: torch.device, dtype: torch.dtype):
        self.reader, self.device, self.dtype = reader, device, dtype

    def load(self, module: nn.Module, prefix: str, stored_dtype: bool = False) -> None:
        """``module``'s weights from the checkpoint (``stored_dtype``: as stored, not in the working dtype)."""
        names = [name for name, tensor in module.state_dict(keep_vars=True).items() if tensor.is_meta]
        for name, tensor in self.reader.read(f"{prefix}{name}" for name in names).items():
            dtype = self.dtype if tensor.is_floating_point() and not stored_dtype else tensor.dtype
            _swap(module, name[len(prefix) :], tensor.to(self.device, dtype))

    @staticmethod
    def free(module: nn.Module) -> None:
        for name, tensor in module.state_dict(keep_vars=True).items():
            _swap(module, name, torch.empty_like(tensor, device="meta"))


def _swap(module: nn.Module, name: str, value: torch.Tensor) -> None:
    """Put ``value`` in place of ``module``'s parameter or buffer ``name`` (dotted), dropping the old one.
    (``Module.to("meta")`` keeps the old storage alive through ``param.data``.)"""
    owner_name, _, attr = name.rpartition(".")
    owner = module.get_submodule(owner_name)
    if attr in owner._parameters:
        owner._parameters[attr] = nn.Parameter(value, requires_grad=False)
    else:
        owner._buffers[attr] = value


@contextlib.contextmanager
def _outside_layers(model: nn.Module, loader: _Loader, prefixes: list[str]) -> Iterator[None]:
    """Modules outside the transformer layers (embeddings) load their weights when first called; all of
    them are freed on exit. An embedding table stays in its stored dtype, its rows cast to the working
    dtype as they are looked up: the same values (a look-up commutes with a cast) at a fraction of the
    memory for a wide vocabulary."""
    called: list[nn.Module] = []

    def on_call(name: str):
        def hook(module, _args):
            loader.load(module, f"{name}.", stored_dtype=isinstance(module, nn.Embedding))
            called.append(module)

        return hook

    def cast(_module, _args, output):
        return output.to(loader.dtype) if output.is_floating_point() else output

    handles = []
    for name, module in model.named_modules():
        own = [*module.parameters(recurse=False)]
        if own and any(p.is_meta for p in own) and not any(f"{name}.".startswith(prefix) for prefix in prefixes):
            handles.append(module.register_forward_pre_hook(on_call(name)))
            if isinstance(module, nn.Embedding):
                handles.append(module.register_forward_hook(cast))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        for module in called:
            loader.free(module)


def prune_streamed(
    folder: str,
    staging: Path,
    config: MagnitudeConfig,
    batches: list[dict] | None,
    *,
    task: Any = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    save_dtype: torch.dtype | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Prune the model in ``folder`` layer by layer into ``staging`` (shards, index, masks file, config),
    never holding more than one transformer layer; ``resume`` continues after the last layer a killed
    run finished. Returns summary fields: the masks' ``sparsity`` and ``sparsity_per_module``,
    ``params_total``, ``params_nonzero``, ``layer_seconds`` (read, prune, advance, write: per layer),
    ``layer_sparsities`` (with OWL), ``streamed``."""
    device = torch.device(device)
    unmap_large_blocks()
    if config.scope == "global" and config.pattern is None:
        raise ConfigError("--stream: --scope global ranks every layer's weights at once; use --scope layer or row "
                          "(or --pattern N:M)")  # fmt: skip
    reader = CheckpointReader(folder)
    loader = _Loader(reader, device, dtype)
    model = empty_model(folder, task, dtype, device)
    adapter = get_adapter(model)
    layers, prefixes = adapter.layer_list(), adapter.layer_prefixes()
    groups = layer_targets(model, resolve_targets(model, config.targets, config.exclude))
    how = LayerPruning(config.importance, config.scope, parse_nm(config.pattern) if config.pattern else None,
                       config.block_size, config.dampening, config.within_layer == "sequential",
                       config.fit_to)  # fmt: skip
    in_layer = [[name for name in reader.names if name.startswith(prefix)] for prefix in prefixes]
    outside = [name for name in reader.names if not any(name.startswith(prefix) for prefix in prefixes)]
    total = len(outside) + len(layers)  # a shard per layer, and one per tensor outside them (embeddings, head)

    def stored(name: str, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(save_dtype or reader.stored[name])

    def copy(number: int, names: list[str], layer: nn.Module | None = None, prefix: str = "", masks=None) -> None:
        """Write shard ``number``: ``names`` from ``layer``'s weights (as pruned) or, where it has none, as stored."""
        weights = layer.state_dict() if layer is not None else {}
        tensors = {name: weights[name[len(prefix) :]] for name in names if name[len(prefix) :] in weights}
        tensors |= reader.read(name for name in names if name not in tensors)
        write_shard(staging, number, total, {name: stored(name, tensor) for name, tensor in tensors.items()})
        _count(state, tensors, masks or {})

    @contextlib.contextmanager
    def resident(index: int) -> Iterator[None]:
        loader.load(layers[index], prefixes[index])
        try:
            yield
        finally:
            loader.free(layers[index])

    state = StreamState.load(staging) if resume else None
    if state is None:
        state = StreamState(sparsities=[config.sparsity] * len(layers))
        for number, name in enumerate(outside, start=1):
            copy(number, [name])
        if how.calibrated:
            if not batches:
                raise ConfigError(f"--importance {config.importance} needs calibration data: pass --data")
            with _outside_layers(model, loader, prefixes):
                state.inputs = first_layer_inputs(model, layers[0], batches, device)
            state.dense_inputs = list(state.inputs) if how.asymmetric else None
            if config.owl:
                state.sparsities = owl_layer_sparsities(layers, groups, list(state.inputs), config.sparsity,
                                                        config.owl_threshold, config.owl_spread, resident)  # fmt: skip
        state.save(staging)
    elif len(state.sparsities) != len(layers):
        raise ConfigError(
            f"--resume: the saved progress in {staging} is for another model; start again with --overwrite"
        )

    progress = tqdm(range(state.next_layer, len(layers)), desc=f"{config.importance} streamed", leave=False,
                    initial=state.next_layer, total=len(layers))  # fmt: skip
    for index in progress:
        layer, prefix, started = layers[index], prefixes[index], time.perf_counter()
        with resident(index):
            old = read_masks(folder, groups[index].__contains__)
            masks = prune_and_advance(layer, groups[index], state.inputs, state.dense_inputs, state.sparsities[index],
                                      how, old.get, advance_inputs=index + 1 < len(layers))  # fmt: skip
            copy(len(outside) + index + 1, in_layer[index], layer, prefix, {**old, **masks})
            del masks, old  # nothing of a layer outlives its turn
        state.next_layer = index + 1
        state.layer_seconds.append(round(time.perf_counter() - started, 2))
        state.save(staging)
        logger.info("layer %d of %d pruned and written", index + 1, len(layers))

    write_index(staging, total)
    carried = read_masks(folder, lambda name: name not in state.bits)  # input masks outside the targets
    _count(state, {}, carried)
    if state.bits:
        save_mask_bits(state.bits, state.shapes, staging)
    _save_config(model, folder, staging, save_dtype or _stored_dtype(reader))
    (staging / STATE_FILE).unlink()
    masked, kept = sum(_numel(state, name) for name in state.kept), sum(state.kept.values())
    fields: dict[str, Any] = {
        "sparsity": round(1.0 - kept / masked, 6) if masked else 0.0,
        "sparsity_per_module": {name: round(1.0 - k / _numel(state, name), 6) for name, k in state.kept.items()},
        "params_total": state.counts["params"],
        "params_nonzero": state.counts["nonzero"],
        "streamed": True,
        "layer_seconds": state.layer_seconds,
    }
    if config.owl:
        fields["layer_sparsities"] = _layer_sparsities(state, prefixes)
    return fields


def unmap_large_blocks() -> None:
    """Have glibc map every block of 1 MiB or more on its own and unmap it when freed. By default its mmap
    threshold grows after the first large frees, and freed layers then stay in the heap for reuse that
    fragmentation defeats: measured here, peak memory grew by a third from 4 to 16 layers, 2 % with this."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):  # not glibc
            ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, 1 << 20)


def _count(state: StreamState, tensors: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> None:
    """Add written ``tensors`` to the parameter counts and ``masks`` to the packed masks and their counts."""
    for tensor in tensors.values():
        state.counts["params"] += tensor.numel()
        state.counts["nonzero"] += int(torch.count_nonzero(tensor))
    for name, mask in masks.items():
        mask = mask.to("cpu", torch.bool)
        state.bits[name], state.shapes[name], state.kept[name] = pack_bits(mask), list(mask.shape), int(mask.sum())


def _numel(state: StreamState, name: str) -> int:
    return torch.Size(state.shapes[name]).numel()


def _layer_sparsities(state: StreamState, prefixes: list[str]) -> list[float | None]:
    """The pruned share of each layer's masked weights (as ``MaskSet.sparsity_per_prefix``)."""
    result = []
    for prefix in prefixes:
        names = [name for name in state.kept if name.startswith(prefix)]
        total = sum(_numel(state, name) for name in names)
        result.append(round(1.0 - sum(state.kept[name] for name in names) / total, 6) if total else None)
    return result


def _stored_dtype(reader: CheckpointReader) -> torch.dtype:
    """The dtype most of the input's floating-point weights are stored in."""
    dtypes = [dtype for dtype in reader.stored.values() if dtype.is_floating_point]
    return max(set(dtypes), key=dtypes.count) if dtypes else torch.float32


def _save_config(model: nn.Module, folder: str, staging: Path, dtype: torch.dtype) -> None:
    """The input's config (saved in ``dtype``) and generation config beside the shards."""
    import shutil

    model.config.dtype = dtype
    model.config.save_pretrained(staging)
    if (Path(folder) / "generation_config.json").is_file():
        shutil.copyfile(Path(folder) / "generation_config.json", staging / "generation_config.json")
