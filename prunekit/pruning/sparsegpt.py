"""SparseGPT (Frantar & Alistarh, 2023): prune one weight matrix and update the weights it keeps so the
layer's output on calibration inputs changes as little as possible.

Columns are processed left to right. Removing weight ``W[r, i]`` is an optimal-brain-surgeon step on
the layer's Hessian ``H = E[x xᵀ]``: its error ``(w - q) / [H⁻¹]ᵢᵢ`` is spread over the row's later
columns through the upper Cholesky factor of ``H⁻¹``. Which weights go is decided once per block of
``block_size`` columns (unstructured: the lowest ``w² / [H⁻¹]ᵢᵢ²`` in the block), or per group of ``m``
columns in each row (N:M).
"""

from __future__ import annotations

import torch

from prunekit.errors import ConfigError


def inverse_hessian_factor(
    hessian: torch.Tensor, dampening: float, overwrite: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(U, dead)``: the upper Cholesky factor of the dampened ``H⁻¹``, and the input channels that
    never fired (``H_ii = 0``; their weights are set to zero, as they never contribute). ``overwrite``:
    dampen a float64 ``hessian`` in place instead of a copy (the caller has no further use for it)."""
    h = hessian.double() if overwrite else hessian.double().clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    h.diagonal().add_(dampening * torch.mean(torch.diag(h)))
    try:  # in place: one n x n float64 matrix instead of two (the widest input's is 250 MB); tested bit-equal
        torch.linalg.cholesky(h, out=h)
        torch.cholesky_inverse(h, out=h)
        torch.linalg.cholesky(h, upper=True, out=h)
        return h.float(), dead
    except torch.linalg.LinAlgError:
        raise ConfigError(
            f"--dampening {dampening}: the calibration Hessian is not positive definite even when dampened; "
            "pass a larger --dampening (e.g. 0.1) or more --calibration-samples"
        ) from None


@torch.no_grad()
def sparsegpt_prune(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    *,
    sparsity: float = 0.5,
    pattern: tuple[int, int] | None = None,
    block_size: int = 128,
    dampening: float = 0.01,
    keep: torch.Tensor | None = None,
    overwrite_hessian: bool = False,
    input_drift: torch.Tensor | None = None,
) -> torch.Tensor:
    """Prune ``weight`` (out × in) in place; returns its keep-mask.

    ``pattern`` (n, m): keep n of every m consecutive input weights of each row (overrides ``sparsity``).
    ``keep``: an existing mask; its pruned weights stay pruned (they count towards the sparsity).
    ``overwrite_hessian``: ``hessian`` may be used as scratch space (saves a copy of the widest matrix).
    ``input_drift``: E[(x_dense − x) xᵀ], where ``hessian`` is E[x xᵀ] of inputs x that differ from the
    dense model's x_dense (the layers before were pruned). The weights are first moved to the least-squares
    fit of the dense outputs, W* = W + W E[(x_dense − x) xᵀ] H⁻¹: as ‖W X_dense − Ŵ X‖² =
    ‖W X_dense − W* X‖² + ‖(W* − Ŵ) X‖², pruning W* as usual minimises the error against the dense
    outputs (asymmetric calibration, GPTAQ). Without drift nothing moves.
    """
    if pattern is not None and block_size % pattern[1]:
        raise ConfigError(f"--block-size {block_size}: must be a multiple of the pattern's group size {pattern[1]}")
    if pattern is not None and weight.shape[1] % pattern[1]:
        raise ConfigError(f"--pattern: {weight.shape[1]} input features do not split into groups of {pattern[1]}")
    shift = None if input_drift is None else weight.detach().float() @ input_drift.to(weight.device, torch.float32)
    del input_drift
    factor, dead = inverse_hessian_factor(hessian.to(weight.device), dampening, overwrite_hessian)
    del hessian  # freed here unless the caller holds it
    keep = keep.to(weight.device) if keep is not None else None
    w = weight.detach().float().clone()  # updated in float32 whatever the weights' dtype
    if shift is not None:  # H⁻¹ = Uᵀ U
        w += (shift @ factor.T) @ factor
        del shift
    w[:, dead] = 0.0
    cols = w.shape[1]
    pruned = torch.zeros_like(w, dtype=torch.bool)
    for start in range(0, cols, block_size):
        end = min(start + block_size, cols)
        block, block_factor = w[:, start:end].clone(), factor[start:end, start:end]
        diag = torch.diag(block_factor)
        errors = torch.zeros_like(block)
        forced = None if keep is None else ~keep[:, start:end]
        if pattern is None:
            pruned[:, start:end] = _lowest(block**2 / diag**2, round(sparsity * block.numel()), forced)
        for i in range(end - start):
            if pattern is not None and i % pattern[1] == 0:
                group = slice(i, i + pattern[1])
                scores = block[:, group] ** 2 / diag[group] ** 2
                pruned[:, start + i : start + i + pattern[1]] = _lowest_per_row(
                    scores, pattern[1] - pattern[0], None if forced is None else forced[:, group]
                )
            column = block[:, i]
            errors[:, i] = column * pruned[:, start + i] / block_factor[i, i]  # a kept weight has no error
            block[:, i:] -= errors[:, i : i + 1] * block_factor[i : i + 1, i:]
            block[:, i].masked_fill_(pruned[:, start + i], 0.0)  # exact zeros (the update leaves rounding)
        w[:, start:end] = block
        w[:, end:] -= errors @ factor[start:end, end:]
    weight.copy_(w.to(weight.dtype))
    return ~pruned


def _lowest(scores: torch.Tensor, count: int, forced: torch.Tensor | None) -> torch.Tensor:
    """Mask of the ``count`` lowest scores (``forced`` entries first, and always)."""
    if forced is not None:
        scores = scores.masked_fill(forced, -1.0)
    mask = torch.zeros(scores.numel(), dtype=torch.bool)
    mask[torch.topk(scores.flatten(), count, largest=False).indices] = True
    mask = mask.view_as(scores)
    return mask if forced is None else mask | forced


def _lowest_per_row(scores: torch.Tensor, count: int, forced: torch.Tensor | None) -> torch.Tensor:
    if forced is not None:
        scores = scores.masked_fill(forced, -1.0)
    mask = torch.zeros_like(scores, dtype=torch.bool)
    mask.scatter_(1, torch.topk(scores, count, dim=1, largest=False).indices, True)
    return mask if forced is None else mask | forced
