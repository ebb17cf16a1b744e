"""Timing settings (declared once for ``prunekit bench`` and the ``bench`` stage) and the ``bench`` stage:
every model a run made, its dense parent and its equal-budget control, timed interleaved in one process
(ratios from one run are comparable; separate runs drift)."""

from __future__ import annotations

from dataclasses import dataclass

from prunekit.devices import DeviceConfig, OffloadConfig
from prunekit.errors import ConfigError
from prunekit.evaluation.bench import REPEATS, SHAPE, THREADS, WARMUP
from prunekit.options import count, option, positive_int, section
from prunekit.stages.base import StageContext, StageInputs, StageResult, register_stage


@dataclass
class TimingConfig:
    """How forward passes are timed: batch x length random tokens, threads, warm-up and timed runs."""

    batch_size: int | None = option(
        None, f"sequences per batch (default {SHAPE[0]}; --generate: 1)", parse=positive_int
    )
    seq_len: int = option(SHAPE[1], "tokens per sequence", parse=positive_int)
    threads: int = option(THREADS, "threads the timed passes use", parse=positive_int)
    warmup: int = option(WARMUP, "untimed passes first", parse=count)
    repeats: int | None = option(None, f"timed runs per model (default {REPEATS}; generation: 10)", parse=positive_int)
    runtime: DeviceConfig = section(DeviceConfig)
    offload: OffloadConfig = section(OffloadConfig)


def parent_name(model_stages: list[tuple[str, str | None]]) -> str | None:
    """The run's dense reference among its ``(name, role)`` model-making stages, in order: the stage with
    ``role: parent``, else the first."""
    return next((name for name, role in model_stages if role == "parent"), model_stages[0][0] if model_stages else None)


def load_run_models(config: TimingConfig, inputs: StageInputs) -> StageContext:
    """The run's models, in order, as ``StageContext.loaded_fields['models']``: ``{stage: (folder, role)}``."""
    if not inputs.run_models:
        raise ConfigError("bench: no model of the run to time (a bench stage comes after stages that make models)")
    return StageContext(None, model_name=inputs.model, loaded_fields={"models": dict(inputs.run_models)})


@register_stage(
    "bench",
    TimingConfig,
    "time every model of the run interleaved, against the parent and the control",
    load=load_run_models,
    makes_model=False,
    omit=("save_dtype",),
)
def run_bench(context: StageContext, config: TimingConfig) -> StageResult:
    """``{"models": {stage: {latency_ms, flops, ratio_vs_parent, ratio_vs_control}}, ...}``: forward passes
    of batch x seq random tokens, as ``prunekit bench`` times them."""
    from prunekit.evaluation import count_flops, make_inputs, make_summary, measure_latency
    from prunekit.models import load_model

    run_models = context.loaded_fields["models"]
    batch = config.batch_size or SHAPE[0]  # 1 with --generate
    names = list(run_models)
    parent = parent_name([(name, role) for name, (_, role) in run_models.items()])
    control = next((name for name, (_, role) in run_models.items() if role == "control"), None)
    runtime = config.runtime
    models = [load_model(folder, dtype=runtime.torch_dtype(), device=runtime.torch_device(),
                         **config.offload.load_options())[0] for folder, _ in run_models.values()]  # fmt: skip
    inputs = [make_inputs(model, batch, config.seq_len) for model in models]
    flops = [count_flops(model, batch_inputs) for model, batch_inputs in zip(models, inputs)]
    stats = measure_latency(models, inputs, threads=config.threads, warmup=config.warmup,
                            repeats=config.repeats or REPEATS)  # fmt: skip
    median = {name: s.median for name, s in zip(names, stats)}
    rows = {}
    for name, s, flop_count in zip(names, stats, flops):
        rows[name] = {
            "latency_ms": s.as_dict(),
            "flops": flop_count,
            "ratio_vs_parent": round(median[parent] / s.median, 4) if parent else None,
            "ratio_vs_control": round(median[control] / s.median, 4) if control else None,
        }
    for name, row in rows.items():
        ratio = f", {row['ratio_vs_parent']:.2f}x the parent" if parent else ""
        print(f"  {name:<20} {row['latency_ms']['median']:8.2f} ms{ratio}")
    summary = make_summary("bench-run", context.model_name, None, parent=parent, control=control, batch_size=batch,
                           seq_len=config.seq_len, models=rows, **runtime.record())  # fmt: skip
    return StageResult("bench-run", None, None, save_format="written", summary=summary)
