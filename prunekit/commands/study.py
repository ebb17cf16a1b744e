"""``prunekit study ordering``: LoRA → prune, prune → LoRA and joint (adaptive) with the same target
and the same total training steps, over several seeds, against the equal-budget dense control.
Each order of each seed is a recipe run (``prunekit.recipes.orders``) in ``seed-N/ORDER/``, the control
in ``seed-N/control/``. Writes a table (mean ± std), a plot (metric vs measured speed-up per order) and
summary.json."""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from prunekit.commands.common import add_data_arguments, add_output_arguments
from prunekit.commands.compress import (
    SHAPES,
    add_workflow_arguments,
    data_options,
    latency_table,
    prepare,
    share_latency_table,
    time_stages,
    workflow_config,
)
from prunekit.errors import ConfigError
from prunekit.options import seed

CONFIG_FILE = "study_config.json"


def add_parser(commands) -> None:
    from prunekit.recipes.orders import ORDERS

    study = commands.add_parser("study", help="measured comparisons of workflows (ordering: LoRA x pruning)")
    kinds = study.add_subparsers(dest="study", required=True, metavar="STUDY")
    p = kinds.add_parser(
        "ordering", help="LoRA->prune, prune->LoRA and joint at the same target and steps, several seeds"
    )
    p.add_argument("--model", default="minilm", help="pretrained model folder, 'minilm' (default) or hub id")
    add_output_arguments(p)
    add_data_arguments(p, with_train=True)
    add_workflow_arguments(p)
    p.add_argument("--seeds", type=seed, nargs="+", default=[1, 2, 3], help="one run of every order per seed")
    p.add_argument("--orders", nargs="+", choices=ORDERS, default=list(ORDERS), help="orders to compare (default all)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> dict:
    from dataclasses import asdict, replace

    from prunekit.evaluation import make_summary
    from prunekit.io import replace_dir, staging_dir, write_json_atomic
    from prunekit.models import count_parameters
    from prunekit.recipes.orders import CONTROL, control_recipe, order_recipe, stage_rows, stages_of
    from prunekit.recipes.runner import is_main_process, run_stages
    from prunekit.report import plot_ordering

    if len(set(args.seeds)) != len(args.seeds):
        raise ConfigError(f"--seeds {' '.join(map(str, args.seeds))}: each seed once")
    if len(set(args.orders)) != len(args.orders):
        raise ConfigError(f"--orders {' '.join(args.orders)}: each order once")
    out = Path(args.out)
    first = args.seeds[0]  # the data subset is drawn once, so seeds vary training only
    data, size, dense, target, plan = prepare(args, CONFIG_FILE, first, "study ordering")
    configs = {(order, s): workflow_config(args, size, order, s, target, data_seed=first)
               for s in args.seeds for order in args.orders}  # fmt: skip
    settings = {
        "model": args.model,
        "data": args.data,
        "max_train_samples": args.max_train_samples,
        "seeds": args.seeds,
        "orders": args.orders,
        **{k: v for k, v in asdict(configs[args.orders[0], first]).items() if k not in ("order", "seed")},
        "speedup_plan": plan,
    }
    reading = data_options(args)
    settings["latency"] = latency = latency_table(args, dense, CONFIG_FILE)
    staging = staging_dir(out, settings, CONFIG_FILE, args.resume, args.overwrite)
    path = share_latency_table(staging, latency)  # every order and seed allocates from the one table
    configs = {key: replace(config, latency_table=path) for key, config in configs.items()}
    finals, controls = {}, {}
    for s in args.seeds:
        seed_dir = staging / f"seed-{s}"
        config = configs[args.orders[0], s]
        run_stages(control_recipe(config, reading), args.model, args.data, seed_dir / CONTROL)
        for order in args.orders:
            _reuse_teacher(seed_dir, order)
            run_stages(order_recipe(configs[order, s], reading), args.model, args.data, seed_dir / order)
        if not is_main_process():
            continue
        controls[s] = stage_rows(seed_dir / CONTROL, stages_of(CONTROL, config.stage_steps),
                                 f"seed-{s}/{CONTROL}/")[0]  # fmt: skip
        for order in args.orders:
            finals[order, s] = stage_rows(seed_dir / order, configs[order, s].stages(), f"seed-{s}/{order}/")[-1]
    if not is_main_process():
        return {}
    time_stages(dense, list(finals.values()), staging, SHAPES, args.threads)
    metric = data.task.main_metric
    table = _aggregate(args, finals, controls, metric, count_parameters(dense)[0])
    control_values = [controls[s].metrics[metric] for s in args.seeds]
    x = "compression" if target.unstructured else "speedup"  # unstructured zeros are not faster on CPU
    plot_ordering(table, metric, staging / "ordering.png", _mean_std(control_values), x)
    summary = make_summary(
        "study-ordering",
        args.model,
        data.task.name,
        main_metric=metric,
        target=asdict(target),
        speedup_plan=plan,
        seeds=args.seeds,
        stage_steps=configs[args.orders[0], first].stage_steps,
        total_steps=3 * configs[args.orders[0], first].stage_steps,
        control={"per_seed": dict(zip(map(str, args.seeds), control_values)), **_stats(control_values)},
        orders=table,
        runs=[{"order": o, "seed": s, **asdict(row)} for (o, s), row in finals.items()],
    )
    write_json_atomic(staging / "summary.json", summary)
    (staging / "study.md").write_text(_markdown(summary), encoding="utf-8")
    replace_dir(staging, out)
    print(_markdown(summary), end="")
    print(f"saved to {out} (summary.json, study.md, ordering.png; every run's stages in seed-N/ORDER/)")
    return summary


def _reuse_teacher(seed_dir: Path, order: str) -> None:
    """``joint`` and ``lora-prune`` start with the same teacher stage (same seed, data and settings, so
    the same weights): the second order's run takes the first one's finished stage instead of training
    it again."""
    import shutil

    from prunekit.recipes.orders import stages_of

    if not any(spec.becomes_teacher for spec in stages_of(order, 1)):
        return
    done = [seed_dir / other / "teacher" for other in ("joint", "lora-prune") if other != order]
    mine = seed_dir / order / "teacher"
    source = next((folder for folder in done if (folder / "stage.json").is_file()), None)
    if source is not None and not (mine / "stage.json").is_file():
        shutil.rmtree(mine, ignore_errors=True)
        shutil.copytree(source, mine)


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _stats(values: list[float]) -> dict:
    mean, std = _mean_std(values)
    return {"mean": round(mean, 4), "std": round(std, 4)}


def _aggregate(args, finals: dict, controls: dict, metric: str, dense_params: int) -> list[dict]:
    """Per order: the metric and its share of the same seed's control (mean ± std), size and speed
    (``compression``: the dense model's parameters over the final model's non-zero ones)."""
    table = []
    for order in args.orders:
        runs = [finals[order, s] for s in args.seeds]
        values = [row.metrics[metric] for row in runs]
        shares = [row.metrics[metric] / controls[s].metrics[metric] for row, s in zip(runs, args.seeds)]
        speed = {
            shape: round(statistics.fmean(row.extra["speedup"][shape] for row in runs), 3)
            for shape in runs[0].extra["speedup"]
        }
        table.append(
            {
                "order": order,
                **_stats(values),
                "per_seed": dict(zip(map(str, args.seeds), values)),
                "of_control": _stats(shares),
                "params_total": runs[0].params_total,
                "params_nonzero": runs[0].params_nonzero,
                "compression": round(dense_params / runs[0].params_nonzero, 3),
                "speedups": speed,
                "speedup": speed[next(iter(speed))],
            }
        )
    return table


def _markdown(summary: dict) -> str:
    metric = summary["main_metric"]
    control = summary["control"]
    shapes = list(summary["orders"][0]["speedups"])
    ratio = metric == "perplexity"  # lower is better: the share of the control reads as a ratio
    share_header, control_share = ("× equal-budget control", "1×") if ratio else ("% of equal-budget control", "100 %")
    lines = [
        f"Ordering study: {summary['model']} on {summary['task']}, seeds {', '.join(map(str, summary['seeds']))}, "
        f"{summary['total_steps']} optimizer steps per run (3 stages of {summary['stage_steps']}).",
        "",
        f"| order | {metric} (mean ± std) | {share_header} | non-zero params | "
        + " | ".join(f"speed-up {s}" for s in shapes)
        + " |",
        "|---|---|---|---|" + "---|" * len(shapes),
        f"| dense control | {control['mean']:.4f} ± {control['std']:.4f} | {control_share} | — | "
        + " | ".join("1×" for _ in shapes)
        + " |",
    ]
    for row in summary["orders"]:
        share = row["of_control"]
        if ratio:
            share_text = f"{share['mean']:.3f} ± {share['std']:.3f}×"
        else:
            share_text = f"{100 * share['mean']:.1f} ± {100 * share['std']:.1f} %"
        lines.append(
            f"| {row['order']} | {row['mean']:.4f} ± {row['std']:.4f} | {share_text} | {row['params_nonzero']:,} | "
            + " | ".join(f"{row['speedups'][s]:.2f}×" for s in shapes)
            + " |"
        )
    return "\n".join(lines) + "\n"
