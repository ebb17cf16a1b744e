"""Per-weight importance for unstructured pruning: score(name) -> tensor shaped like the weight."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn
from tqdm.auto import tqdm

from prunekit.devices import model_device, to_device
from prunekit.pruning.select import ScoreFn


def magnitude_scores(weights: Mapping[str, nn.Parameter]) -> dict[str, ScoreFn]:
    """|W|: the seed's criterion."""
    return {name: (lambda w=weight: w.detach().abs()) for name, weight in weights.items()}


@torch.no_grad()
def input_channel_norms(
    model: nn.Module, linears: Mapping[str, nn.Linear], batches: Iterable[dict[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """‖X_j‖₂ over all calibration tokens for every input channel j of each Linear (Wanda's statistic).

    Batches should carry no padding (e.g. one example per batch), so pad tokens do not count.
    """
    sums = {name: torch.zeros(linear.in_features, dtype=torch.float64, device=linear.weight.device)
            for name, linear in linears.items()}  # fmt: skip

    def hook(name: str):
        def accumulate(_module, inputs, _output):
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).double()  # (tokens, in_features)
            sums[name] += (x * x).sum(0)

        return accumulate

    handles = [linear.register_forward_hook(hook(name)) for name, linear in linears.items()]
    was_training = model.training
    model.eval()
    try:
        device = model_device(model)
        for batch in tqdm(batches, desc="calibrate", leave=False):
            model(**to_device(batch, device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return {name: total.sqrt().float() for name, total in sums.items()}


def wanda_scores(weights: Mapping[str, nn.Parameter], norms: Mapping[str, torch.Tensor]) -> dict[str, ScoreFn]:
    """Wanda (Sun et al. 2023): |W_ij| · ‖X_j‖₂ — a weight matters more if its input channel is loud."""
    return {
        name: (lambda w=weight, n=norms[name]: w.detach().abs() * n.to(w.device)[None, :])
        for name, weight in weights.items()
    }
