"""A run's ``bench`` stage: every model the run made, its dense parent and its equal-budget control,
timed interleaved in one process (ratios from one run are comparable; separate runs drift)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from prunekit.io import write_json_atomic
from prunekit.recipes.recipe import INPUT, parent_name

if TYPE_CHECKING:
    from prunekit.recipes.runner import RunState


def bench_stage(state: RunState, options: dict, path: Path) -> dict:
    """Time the run's models (as in ``prunekit bench``: forward passes, batch x seq random tokens) and
    write ``{"models": {stage: {latency_ms, flops, ratio_vs_parent, ratio_vs_control}}, ...}``."""
    from prunekit.evaluation import count_flops, make_inputs, make_summary, measure_latency
    from prunekit.models import load_model
    from prunekit.recipes.schema import METHODS

    options = {key: option.default for key, option in METHODS["bench"].options.items()} | options
    batch, seq_len = options["batch_size"] or 32, options["seq_len"]  # bench's batch default: 32 (1 with --generate)
    names = [name for name in state.models if name != INPUT]
    roles = {r["stage"]["name"]: r["stage"].get("role") for r in state.records}
    parent = parent_name([(name, roles.get(name)) for name in names])
    control = next((name for name in names if roles.get(name) == "control"), None)
    models = [load_model(state.models[name])[0] for name in names]
    inputs = [make_inputs(model, batch, seq_len) for model in models]
    flops = [count_flops(model, batch_inputs) for model, batch_inputs in zip(models, inputs)]
    stats = measure_latency(
        models,
        inputs,
        threads=options["threads"],
        warmup=options["warmup"],
        repeats=options["repeats"] or 20,  # bench's default (10 with --generate)
    )
    median = {name: s.median for name, s in zip(names, stats)}
    rows = {}
    for name, s, count in zip(names, stats, flops):
        rows[name] = {
            "latency_ms": s.as_dict(),
            "flops": count,
            "ratio_vs_parent": round(median[parent] / s.median, 4) if parent else None,
            "ratio_vs_control": round(median[control] / s.median, 4) if control else None,
        }
    summary = make_summary(
        "bench-run", state.model, None, parent=parent, control=control, batch_size=batch, seq_len=seq_len, models=rows
    )
    write_json_atomic(path, summary)
    for name, row in rows.items():
        ratio = f", {row['ratio_vs_parent']:.2f}x the parent" if parent else ""
        print(f"  {name:<20} {row['latency_ms']['median']:8.2f} ms{ratio}")
    return summary
