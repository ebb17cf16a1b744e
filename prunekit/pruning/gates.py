"""Multiplicative gates on each attention head's and FFN neuron's output, held by forward pre-hooks.

A gate of 0 masks a unit exactly as removing it would (the head's slice of the output projection's
input, the neuron's input to the down projection); gates that require grad give Michel et al.'s
head-importance gradients ``∂L/∂gate``. ``per_example(n)`` gives each of a batch's ``n`` examples its own
gate row, so one backward pass yields every example's gradient (for the Fisher information).
"""

from __future__ import annotations

import torch
from torch import nn

from prunekit.adapters.base import ModelAdapter


class UnitGates:
    """``with UnitGates(adapter) as gates: gates.heads[layer][h] = 0; model(...)``."""

    def __init__(self, adapter: ModelAdapter, requires_grad: bool = False):
        layers = adapter.layers()
        device = next(adapter.model.parameters()).device
        self.heads = [
            torch.ones(layer.attention.num_heads, device=device, requires_grad=requires_grad) for layer in layers
        ]
        self.neurons = [
            torch.ones(layer.ffn.num_neurons, device=device, requires_grad=requires_grad) for layer in layers
        ]
        self._targets = [
            (layer.attention.output, layer.attention.head_dim, i, "heads") for i, layer in enumerate(layers)
        ]
        self._targets += [(layer.ffn.down, 1, i, "neurons") for i, layer in enumerate(layers)]
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _hook(self, unit_size: int, layer: int, kind: str):
        def gate_input(module: nn.Module, args: tuple) -> tuple:
            x, *rest = args
            gate = getattr(self, kind)[layer].to(x.dtype)
            if gate.dim() == 2:  # one row per example: broadcast over the token positions between
                gate = gate.reshape(gate.shape[0], *[1] * (x.dim() - 2), gate.shape[1])
            gated = (x.unflatten(-1, (gate.shape[-1], unit_size)) * gate[..., None]).flatten(-2)
            return (gated, *rest)

        return gate_input

    def per_example(self, examples: int) -> None:
        """Fresh gates of ones, one row per example of the next batch, requiring grad."""

        def fresh(gates: list[torch.Tensor]) -> list[torch.Tensor]:
            return [torch.ones(examples, g.shape[-1], device=g.device, requires_grad=True) for g in gates]

        self.heads, self.neurons = fresh(self.heads), fresh(self.neurons)

    def __enter__(self) -> UnitGates:
        for module, unit_size, layer, kind in self._targets:
            self._handles.append(module.register_forward_pre_hook(self._hook(unit_size, layer, kind)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
