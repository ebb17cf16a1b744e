"""``prunekit run RECIPE`` (a recipe's stages, resumable, ending with the report) and ``prunekit recipes``."""

from __future__ import annotations

import argparse

from prunekit.errors import ConfigError
from prunekit.options import add_config_arguments
from prunekit.stages.inputs import DataConfig
from prunekit.training.config import FinetuneConfig

BUDGET = ("max_steps", "max_train_samples")  # what a first, short run of a recipe cuts


def add_parser(commands) -> None:
    p = commands.add_parser(
        "run", help="run a recipe (a built-in name or a YAML file): its stages in DIR/NN-name/, then the report"
    )
    p.add_argument("recipe", help="a built-in recipe (prunekit recipes lists them) or a YAML file")
    p.add_argument("--model", default="minilm", help="the starting model: folder, minilm / smollm2 (default minilm)")
    p.add_argument("--data", help="data every stage uses unless it names its own (a GLUE folder, a file, ...)")
    p.add_argument("--out", required=True, help="the run's folder: recipe.yaml, NN-stage/ folders, report.{md,html}")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="change the recipe, e.g. --set stages[2].sparsity=0.8 or --set defaults.max_train_samples=2000",
    )
    p.add_argument("--resume", action="store_true", help="continue a stopped run: finished stages are kept")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    budget = p.add_argument_group(
        "budget (for every stage that takes it, as recipe defaults; the control trains as many steps as the chain)"
    )
    add_config_arguments(budget, FinetuneConfig, only=BUDGET)
    add_config_arguments(budget, DataConfig, only=("max_length",))
    p.set_defaults(handler=run)

    p = commands.add_parser("recipes", help="list the built-in recipes, or show one (--show NAME)")
    p.add_argument("--show", metavar="NAME", help="print a recipe as prunekit runs it (built-in name or file)")
    p.add_argument("--options", metavar="METHOD", help="list a stage method's options: key, default and what it does")
    p.set_defaults(handler=list_recipes)


def run(args: argparse.Namespace) -> None:
    from prunekit.api import run as run_recipe
    from prunekit.recipes.runner import is_main_process

    budget = {key: getattr(args, key) for key in (*BUDGET, "max_length") if getattr(args, key) is not None}
    result = run_recipe(args.recipe, out=args.out, model=args.model, data=args.data, resume=args.resume,
                        overwrite=args.overwrite, overrides=args.overrides, **budget)  # fmt: skip
    if is_main_process():
        from prunekit.report.run_report import markdown_table, read_run, table

        print(f"\nrun finished: {result.out}\n\n{markdown_table(*table(read_run(result.out)[1]))}")
        print(f"\nreport: {result.report[0]} and {result.report[1]}")


def list_recipes(args: argparse.Namespace) -> None:
    from prunekit.errors import did_you_mean
    from prunekit.options import option_help
    from prunekit.recipes.recipe import builtin_recipes, read_recipe
    from prunekit.recipes.schema import METHODS

    if args.options:
        if args.options not in METHODS:
            raise ConfigError(
                f"--options {args.options}: not a method{did_you_mean(args.options, list(METHODS))}; "
                f"expected one of {', '.join(METHODS)}"
            )
        method = METHODS[args.options]
        print(f"{method.name}: {method.help} (prunekit {' '.join(method.command)})")
        for option in method.options.values():
            if not option.hidden:
                print(f"  {option.key:<24} {option_help(option.default, option.help or '')}")
        return
    if args.show:
        print(read_recipe(args.show).dump(), end="")
        return
    for name, path in builtin_recipes().items():
        print(f"{name:<18} {read_recipe(str(path)).description}")
    print("\nprunekit run NAME --model M --data D --out DIR   (prunekit recipes --show NAME prints one)")
