"""Physically remove attention heads, FFN neurons and whole layers: smaller matrices, not zeros.

Linear layers are shrunk in place (new weight tensors, same module objects), so references held by
adapters and hooks stay valid. Works on meta tensors too, which is how a pruned model is rebuilt
before its weights are loaded (see ``prunekit.pruned_models``).

GQA (Llama-style) models: within a layer, the kept query heads must be spread evenly over the kept
KV groups (every kept group serves the same number of query heads), so the model's ``repeat_kv``
stays valid. A KV group whose query heads are all removed is removed with them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from prunekit.adapters.base import ModelAdapter, TransformerLayer
from prunekit.errors import ConfigError


def shrink_linear(linear: nn.Module, keep: torch.Tensor, dim: int) -> None:
    """Keep output rows (``dim=0``) or input columns (``dim=1``) ``keep`` of ``linear``, in place.

    A PEFT LoRA layer (``W + s·B·A``, unmerged) is sliced consistently: its base weight, and ``B``'s
    rows or ``A``'s columns, so the result equals pruning the merged weight."""
    base = getattr(linear, "base_layer", None)
    if base is not None:
        shrink_linear(base, keep, dim)
        for name in linear.lora_A:
            shrink_linear(linear.lora_B[name] if dim == 0 else linear.lora_A[name], keep, dim)
        linear.out_features, linear.in_features = base.out_features, base.in_features
        return
    weight = linear.weight
    linear.weight = nn.Parameter(weight.detach().index_select(dim, keep), requires_grad=weight.requires_grad)
    if dim == 0 and linear.bias is not None:
        linear.bias = nn.Parameter(linear.bias.detach().index_select(0, keep), requires_grad=linear.bias.requires_grad)
    linear.out_features, linear.in_features = linear.weight.shape


def head_rows(heads: Iterable[int], head_dim: int, device: torch.device) -> torch.Tensor:
    heads = torch.tensor(list(heads), dtype=torch.long, device=device)
    return (heads[:, None] * head_dim + torch.arange(head_dim, device=device)).reshape(-1)


class EmptyAttention(nn.Module):
    """Stands in for an attention module whose heads were all removed: the layer keeps its residual.

    Holds the original (now zero-width) projections under their names, so adapters and state dicts
    still find them; the forward returns what the output projection gives for an empty input (its
    bias), exactly what masking every head gives.
    """

    _COPIED = ("attention_head_size", "head_dim", "layer_idx", "num_key_value_groups", "is_causal")

    def __init__(self, attention: nn.Module, output_name: str | None):
        super().__init__()
        for name, child in attention.named_children():
            self.add_module(name, child)
        for name in self._COPIED:
            if hasattr(attention, name):
                setattr(self, name, getattr(attention, name))
        self.output_name = output_name

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> tuple[torch.Tensor, None]:
        empty = hidden_states.new_zeros(*hidden_states.shape[:-1], 0)
        output = getattr(self, self.output_name)(empty) if self.output_name else empty
        return output, None


def prune_heads(adapter: ModelAdapter, keep: dict[int, Sequence[int]]) -> None:
    """Keep, in each listed layer, only the query heads ``keep[layer]`` (indices into current heads)."""
    layers = adapter.layers()
    for index, heads in keep.items():
        layer = layers[index]
        attn = layer.attention
        heads = sorted(set(int(h) for h in heads))
        if heads and (heads[0] < 0 or heads[-1] >= attn.num_heads):
            raise ConfigError(f"layer {index}: head index out of range 0..{attn.num_heads - 1}")
        if len(heads) == attn.num_heads:
            continue
        try:
            groups, per_group = attn.kv_groups_of(heads)
        except ValueError as error:
            raise ConfigError(f"layer {index}: {error}") from None
        device = attn.query.weight.device
        rows = head_rows(heads, attn.head_dim, device)
        kv_rows = head_rows(groups, attn.head_dim, device)
        shrink_linear(attn.query, rows, 0)
        shrink_linear(attn.output, rows, 1)
        shrink_linear(attn.key, kv_rows, 0)
        shrink_linear(attn.value, kv_rows, 0)
        _set_head_counts(attn.module, len(heads), per_group, attn.head_dim)
        if not heads:
            _empty_attention(adapter, layer)


def _set_head_counts(module: nn.Module, heads: int, per_group: int, head_dim: int) -> None:
    """Keep the module's bookkeeping attributes true to its new shapes (forwards read some of them)."""
    for name, value in (
        ("num_attention_heads", heads),
        ("n_heads", heads),
        ("num_heads", heads),
        ("all_head_size", heads * head_dim),
        ("num_key_value_groups", max(per_group, 1)),
    ):
        if isinstance(getattr(module, name, None), int):
            setattr(module, name, value)


def _empty_attention(adapter: ModelAdapter, layer: TransformerLayer) -> None:
    attn = layer.attention
    if isinstance(attn.module, EmptyAttention):
        return
    output_name = next((name for name, child in attn.module.named_children() if child is attn.output), None)
    parent_name, _, attr = adapter.attention_path.rpartition(".")
    parent = layer.module.get_submodule(parent_name) if parent_name else layer.module
    setattr(parent, attr, EmptyAttention(attn.module, output_name))


def prune_neurons(adapter: ModelAdapter, keep: dict[int, Sequence[int]]) -> None:
    """Keep, in each listed layer, only the FFN neurons ``keep[layer]``."""
    layers = adapter.layers()
    for index, neurons in keep.items():
        ffn = layers[index].ffn
        neurons = sorted(set(int(n) for n in neurons))
        if neurons and (neurons[0] < 0 or neurons[-1] >= ffn.num_neurons):
            raise ConfigError(f"layer {index}: neuron index out of range 0..{ffn.num_neurons - 1}")
        if len(neurons) == ffn.num_neurons:
            continue
        neurons = torch.tensor(neurons, dtype=torch.long, device=ffn.up.weight.device)
        shrink_linear(ffn.up, neurons, 0)
        if ffn.gate is not None:
            shrink_linear(ffn.gate, neurons, 0)
        shrink_linear(ffn.down, neurons, 1)


def drop_layers(adapter: ModelAdapter, keep: Sequence[int]) -> None:
    """Keep only the transformer layers ``keep`` (in order), renumber them and update the config."""
    layer_list = adapter.layer_list()
    total = len(layer_list)
    keep = sorted(set(int(i) for i in keep))
    if not keep or keep[0] < 0 or keep[-1] >= total:
        raise ConfigError(f"layers to keep must be 1..{total} indices in 0..{total - 1}")
    kept = [layer_list[i] for i in keep]
    for i in reversed(range(total)):
        del layer_list[i]
    layer_list.extend(kept)
    for new_index, layer in enumerate(kept):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_index
    config = adapter.model.config
    config.num_hidden_layers = len(keep)
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in keep]
