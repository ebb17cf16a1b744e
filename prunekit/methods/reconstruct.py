"""Structured pruning with layer-wise reconstruction, no training: after the heads and FFN neurons to
keep are chosen, each layer's output projection (attention output, FFN down; ``o_proj`` / ``down_proj``
for decoders) is refit by regularised least squares so that the kept units reproduce what the dense
projection computed on the calibration activations (Kwon et al. 2022's least-squares mask tuning).

Layers are done in order, as SparseGPT's sequential pass does: layer ``l`` is fitted on the inputs the
already-pruned layers before it produce, and its FFN on what its own pruned attention produces. Only the
Gram matrix ``X^T X`` of a projection's input is kept (float64; with a ones column where the projection
has a bias, which is refit too: the mean compensation a removed unit needs), so memory is one
``(width + 1)^2`` matrix whatever the calibration size. Nothing pruned in a layer leaves it untouched.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch import nn

from prunekit.adapters import ModelAdapter
from prunekit.methods.sequential import StopForward
from prunekit.pruning.surgery import head_rows, prune_heads, prune_neurons

Batch = dict[str, torch.Tensor]
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # labels aside: no loss is needed


def _captured_input(model: nn.Module, linear: nn.Linear, inputs: dict, mask: torch.Tensor | None) -> torch.Tensor:
    """The inputs ``linear`` sees on one batch, one row per real token (padding left out), float64, with a
    ones column when ``linear`` has a bias; the forward pass stops at ``linear``."""
    seen = []

    def capture(module, args):
        seen.append(args[0].reshape(-1, linear.in_features))
        raise StopForward

    handle = linear.register_forward_pre_hook(capture)
    try:
        model(**inputs)
    except StopForward:
        pass
    finally:
        handle.remove()
    rows = seen[0].to(torch.float64)
    if mask is not None:
        rows = rows[mask.reshape(-1).to(rows.device).bool()]
    if linear.bias is not None:
        rows = torch.cat([rows, rows.new_ones(len(rows), 1)], dim=1)
    return rows


@torch.no_grad()
def input_gram(model: nn.Module, linear: nn.Linear, batches: Sequence[Batch]) -> torch.Tensor:
    """``X^T X`` (float64) of the inputs ``linear`` sees on ``batches``: padding positions left out, a ones
    column appended when it has a bias."""
    gram = None
    device = linear.weight.device
    for batch in batches:
        inputs = {k: v.to(device) for k, v in batch.items() if k in MODEL_INPUTS}
        rows = _captured_input(model, linear, inputs, batch.get("attention_mask"))
        gram = rows.T @ rows if gram is None else gram.add_(rows.T @ rows)
    return gram


def refit(linear: nn.Linear, gram: torch.Tensor, kept: torch.Tensor, dampening: float) -> tuple[torch.Tensor, ...]:
    """The weights (and bias) of ``linear`` restricted to the input columns ``kept`` that best reproduce its
    dense output on the inputs whose Gram matrix is ``gram``: ``argmin ||X_S W_S^T + b_S - X W^T - b||^2 +
    lambda ||W_S||^2``, lambda ``dampening`` x the mean diagonal of ``X_S^T X_S``. Returns ``(weight,
    bias or None, relative error before, relative error after)``: the output error of keeping the dense
    weights of ``kept`` (plain pruning) and of the refit ones, relative to the dense output."""
    dense = linear.weight.detach().to(torch.float64).T  # (in, out)
    if linear.bias is not None:
        dense = torch.cat([dense, linear.bias.detach().to(torch.float64)[None]], dim=0)
        kept = torch.cat([kept, kept.new_tensor([linear.in_features])])
    system = gram[kept][:, kept].clone()
    diagonal = torch.arange(len(kept) - (linear.bias is not None), device=system.device)
    system[diagonal, diagonal] += dampening * system[diagonal, diagonal].mean().clamp_min(1e-12)
    solution = torch.linalg.solve(system, gram[kept] @ dense)  # (X_S^T X_S + lambda) W_S^T = X_S^T X W^T

    def error(weights: torch.Tensor) -> float:  # ||X (padded weights - W^T)||^2 / ||X W^T||^2
        delta = -dense
        delta[kept] += weights
        return float(torch.trace(delta.T @ gram @ delta) / torch.trace(dense.T @ gram @ dense).clamp_min(1e-30))

    before, after = error(dense[kept]), error(solution)
    if linear.bias is not None:
        return solution[:-1].T, solution[-1], before, after
    return solution.T, None, before, after


def _set(linear: nn.Linear, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    linear.weight.data.copy_(weight.to(linear.weight.dtype))
    if bias is not None:
        linear.bias.data.copy_(bias.to(linear.bias.dtype))


def _output(adapter: ModelAdapter, index: int, part: str) -> nn.Linear:
    """The output projection of layer ``index``'s ``part`` (attention or ffn)."""
    layer = adapter.layers()[index]
    return layer.attention.output if part == "attention" else layer.ffn.down


def _units(adapter: ModelAdapter, index: int, part: str) -> int:
    layer = adapter.layers()[index]
    return layer.attention.num_heads if part == "attention" else layer.ffn.num_neurons


def _input_columns(adapter: ModelAdapter, index: int, part: str, kept: list[int], device) -> torch.Tensor:
    """The output projection's input columns that the kept heads (``head_dim`` each) or neurons feed."""
    if part == "attention":
        return head_rows(kept, adapter.layers()[index].attention.head_dim, device)
    return torch.tensor(kept, dtype=torch.long, device=device)


def _cut(adapter: ModelAdapter, index: int, part: str, kept: list[int]) -> None:
    (prune_heads if part == "attention" else prune_neurons)(adapter, {index: kept})


def prune_and_reconstruct(
    model: nn.Module,
    adapter: ModelAdapter,
    kept_heads: dict[int, list[int]],
    kept_neurons: dict[int, list[int]],
    batches: Sequence[Batch],
    dampening: float = 0.01,
) -> dict:
    """Remove the units not in ``kept_heads`` / ``kept_neurons`` (per layer) layer by layer, refitting each
    pruned layer's output projection on ``batches`` (see the module docstring) to reproduce the dense
    projection's output on the pruned model's own inputs (reproducing the dense *model's* output there
    instead, so the refit also absorbs what earlier layers changed, was measured worse: NOTES.md).
    Returns the summary's ``reconstruction`` record: per projection refit, the relative output error of
    plain pruning and after the refit."""
    from prunekit.memory import peak_rss_mb

    started, was_training = time.perf_counter(), model.training
    model.eval()
    record = []
    for index in range(len(adapter.layers())):
        for part, kept_units in (("attention", kept_heads), ("ffn", kept_neurons)):
            units = _units(adapter, index, part)
            kept = sorted(kept_units.get(index, range(units)))
            if len(kept) == units:
                continue  # nothing pruned: left exactly as it was
            if not kept:  # nothing stays: no projection left to refit
                _cut(adapter, index, part, kept)
                continue
            linear = _output(adapter, index, part)
            columns = _input_columns(adapter, index, part, kept, linear.weight.device)
            weight, bias, before, after = refit(linear, input_gram(model, linear, batches), columns, dampening)
            _cut(adapter, index, part, kept)
            _set(_output(adapter, index, part), weight, bias)
            record.append({"layer": index, "part": part, "error_before": round(before, 6),
                           "error_after": round(after, 6)})  # fmt: skip
    model.train(was_training)
    mean = (lambda key: round(sum(r[key] for r in record) / len(record), 6)) if record else (lambda key: None)
    return {"dampening": dampening, "error_before": mean("error_before"),
            "error_after": mean("error_after"), "seconds": round(time.perf_counter() - started, 2),
            "peak_rss_mb": peak_rss_mb(), "layers": record}  # fmt: skip
