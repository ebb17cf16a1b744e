"""Loading a state dict strictly: every tensor of the model must be there, except tied duplicates."""

from __future__ import annotations

import torch


def load_state_dict_strict(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """``load_state_dict`` that fails (ValueError) on a missing or unexpected tensor.

    Of names sharing one tensor (tied embeddings), one present in ``state`` is enough: ``tie_weights``
    restores the others.
    """
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    groups: dict[int, list[str]] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        groups.setdefault(tensor.data_ptr(), []).append(name)
    missing = [names[0] for names in groups.values() if not any(name in state for name in names)]
    unexpected = sorted(set(state) - {name for names in groups.values() for name in names})
    if missing or unexpected:
        raise ValueError(f"missing tensors {missing[:3]}, unexpected {unexpected[:3]}")
    model.load_state_dict(state, strict=False)
    if hasattr(model, "tie_weights"):
        model.tie_weights()
