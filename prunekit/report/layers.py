"""Per-layer structure of a saved model, for the report: heads and FFN neurons kept, non-zero weights."""

from __future__ import annotations


def layer_structure(folder: str) -> list[dict[str, float]]:
    """``[{heads, ffn, nonzero}, ...]`` per transformer layer (empty for an architecture without adapter)."""
    from prunekit.adapters.registry import get_adapter
    from prunekit.errors import UnsupportedModelError
    from prunekit.models import load_model

    model, _ = load_model(folder)
    try:
        adapter = get_adapter(model)
    except UnsupportedModelError:
        return []
    rows = []
    for layer in adapter.layers():
        linears = layer.linears()
        total = sum(m.weight.numel() for m in linears)
        nonzero = sum(int(m.weight.count_nonzero()) for m in linears)
        share = nonzero / total if total else 1.0
        rows.append({"heads": layer.attention.num_heads, "ffn": layer.ffn.num_neurons, "nonzero": share})
    return rows
