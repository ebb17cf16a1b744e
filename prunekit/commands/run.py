"""``prunekit run RECIPE`` (a recipe's stages, resumable, ending with the report) and ``prunekit recipes``."""

from __future__ import annotations

import argparse
from pathlib import Path

from prunekit.errors import ConfigError


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
    p.set_defaults(handler=run)

    p = commands.add_parser("recipes", help="list the built-in recipes, or show one (--show NAME)")
    p.add_argument("--show", metavar="NAME", help="print a recipe as prunekit runs it (built-in name or file)")
    p.add_argument("--options", metavar="METHOD", help="list a stage method's options: key, default and what it does")
    p.set_defaults(handler=list_recipes)


def run(args: argparse.Namespace) -> None:
    from prunekit.io import check_output_dir, recover_output_dir
    from prunekit.models import load_config, resolve_model
    from prunekit.recipes.recipe import read_recipe
    from prunekit.recipes.runner import (
        check_lengths,
        is_main_process,
        publish_run,
        recipe_inputs,
        run_recipe,
    )
    from prunekit.report.run_report import REPORT_HTML, REPORT_MD, write_report

    if args.resume and args.overwrite:
        raise ConfigError("--resume and --overwrite: pick one")
    recipe = read_recipe(args.recipe, args.overrides)
    folder = resolve_model(args.model, "--model")  # a missing model fails now, not in stage 1
    out = Path(args.out)
    recover_output_dir(out)
    inputs = [("--model", folder), ("--data", args.data), *recipe_inputs(recipe)]
    check_output_dir(out, overwrite=True, inputs=inputs)  # an existing run: prepare_out decides
    check_lengths(recipe, load_config(folder), args.model)
    where = run_recipe(recipe, args.model, args.data, out, args.resume, args.overwrite)
    if not is_main_process():
        return
    write_report(where)
    publish_run(where, out)
    print(f"\nrun finished: {out}\nreport: {out / REPORT_MD} and {out / REPORT_HTML}")


def list_recipes(args: argparse.Namespace) -> None:
    from prunekit.errors import did_you_mean
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
            default = (
                "" if option.default is None or "default" in (option.help or "") else f" (default {option.default})"
            )
            print(f"  {option.key:<24} {option.help or ''}{default}")
        return
    if args.show:
        print(read_recipe(args.show).dump(), end="")
        return
    for name, path in builtin_recipes().items():
        print(f"{name:<18} {read_recipe(str(path)).description}")
    print("\nprunekit run NAME --model M --data D --out DIR   (prunekit recipes --show NAME prints one)")
