"""The folder a recipe run lives in: what it may hold (``prepare_out``), its records (``run.json``,
``recipe.yaml``, each stage's ``stage.json``), the staging folder an ``--overwrite`` run is built in
and swapped in from (``publish_run``), and the checks made before the first stage starts."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from prunekit.errors import ConfigError, quote
from prunekit.io import read_json, replace_dir, write_json_atomic, write_text_atomic
from prunekit.recipes.recipe import Recipe, Stage
from prunekit.recipes.schema import METHODS

RUN_FILE, RECIPE_FILE, STAGE_FILE, LOG_FILE = "run.json", "recipe.yaml", "stage.json", "log.txt"
TICKET_DIR = "ticket"  # lottery's winning ticket inside its folder


def stage_folder(out: Path, index: int, stage: Stage, recipe: Recipe | None = None) -> Path:
    return out / (recipe.folder_name(index, stage) if recipe is not None else f"{index:02d}-{stage.name}")


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def staging_path(out: Path) -> Path:
    """Where an ``--overwrite`` run is built until it is complete."""
    return out.parent / f".{out.name}.partial"


def run_folder(out: Path, resume: bool, overwrite: bool) -> Path:
    """The folder the stages go to: ``out``, or its staging folder for ``--overwrite`` (and for
    ``--resume`` of an ``--overwrite`` run that stopped). The same answer in every torchrun process."""
    staging = staging_path(out)
    if overwrite or (resume and (staging / RUN_FILE).is_file()):
        return staging
    return out


def input_settings(model: str, data: str | None) -> dict:
    """run.json's inputs: as given, and the places they name (what ``--resume`` compares)."""
    return {"model": model, "data": data, "model_path": same_input(model), "data_path": same_input(data)}


def prepare_out(folder: Path, out: Path, recipe: Recipe, model: str, data: str | None, resume: bool) -> None:
    """Check that ``folder`` may hold this run (with ``resume``: that it holds this run, with the same
    inputs and, for its finished stages, the same recipe). ``folder`` is ``out``, or for ``--overwrite``
    the staging folder beside it."""
    settings = input_settings(model, data)
    if not is_main_process():
        return  # the first process checks and writes; the others follow its folders
    staging = staging_path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder")
    holds_run = (out / RUN_FILE).is_file()
    if out.is_dir() and any(out.iterdir()) and not holds_run:
        raise ConfigError(f"--out {out}: a folder that holds something other than a prunekit run; pick a new one")
    if resume:
        if not (folder / RUN_FILE).is_file():
            raise ConfigError(f"--resume: {out} holds no run to continue")
        saved = read_json(folder / RUN_FILE, "the run's inputs")
        changed = [key for key in ("model", "data") if _saved_input(saved, key) != settings[f"{key}_path"]]
        if changed:
            flags = ", ".join(f"--{key} was {quote(saved.get(key))}" for key in changed)
            raise ConfigError(f"--resume: {out} was started with different inputs ({flags})")
    elif folder == staging:  # --overwrite: the earlier run stays in out until this one is complete
        shutil.rmtree(staging, ignore_errors=True)
    elif staging.exists():
        raise ConfigError(
            f"--out {out}: an unfinished --overwrite run is kept in {staging}; pass --resume to continue it "
            "or --overwrite to start again"
        )
    elif holds_run:
        raise ConfigError(f"--out {out}: holds a run already; pass --resume to continue it or --overwrite")
    for index, stage in enumerate(recipe.stages, 1):
        finished_record(stage_folder(folder, index, stage, recipe), stage)  # a changed recipe: refused before any work


def record_run(folder: Path, recipe: Recipe, settings: dict) -> None:
    """Refuse a recipe that changed under the finished stages in ``folder``, then save the run's inputs
    (once) and the recipe (later stages may change on ``--resume``)."""
    for index, stage in enumerate(recipe.stages, 1):
        finished_record(stage_folder(folder, index, stage, recipe), stage)
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / RUN_FILE).is_file():
        started = time.strftime("%Y-%m-%dT%H:%M:%S")
        write_json_atomic(folder / RUN_FILE, {**settings, "recipe": recipe.origin, "started": started})
    write_text_atomic(folder / RECIPE_FILE, recipe.dump())


def publish_run(folder: Path, out: Path) -> None:
    """Put a run finished in its staging folder in place of ``out``: the earlier run goes only now."""
    if is_main_process() and folder != out:
        replace_dir(folder, out)


def same_input(value: str | None) -> str | None:
    """A model or data path compared by the place it names (an alias such as minilm as given)."""
    return str(Path(value).resolve()) if value is not None and Path(value).exists() else value


def _saved_input(saved: dict, key: str) -> str | None:
    """An input as run.json recorded it: the place it named (older runs recorded only what was typed)."""
    return saved[f"{key}_path"] if f"{key}_path" in saved else same_input(saved.get(key))


def recipe_inputs(recipe: Recipe) -> list[tuple[str, str]]:
    """``(where, path)`` of every file or folder the recipe's stages name (a teacher, data, an adapter):
    the run's --out must leave them alone."""
    return [
        (f"{recipe.origin}: stages[{index}].{key}", value)
        for index, stage in enumerate(recipe.stages)
        for key, value in stage.options.items()
        if isinstance(value, str) and not value.startswith("@") and Path(value).expanduser().exists()
    ]


def check_lengths(recipe: Recipe, config, model: str) -> None:
    """Every token length a stage will use (its ``max_length``, a bench or export stage's timing
    ``seq_len`` with its default) must fit the input model's positions: refused before the first stage
    trains, not when the stage that uses it comes."""
    from prunekit.models import check_max_length

    for index, stage in enumerate(recipe.stages):
        options = METHODS[stage.method].options
        for key in ("max_length", "seq_len"):
            value = stage.options.get(key, options[key].default if key in options else None)
            if isinstance(value, int):
                check_max_length(config, value, f"{recipe.origin}: stages[{index}].{key}", f" of --model {model}")


def finished_record(folder: Path, stage: Stage) -> dict | None:
    path = folder / STAGE_FILE
    if not path.is_file():
        return None
    record = read_json(path, "a finished stage's record; delete its folder to run the stage again")
    if record.get("stage") != stage.as_dict():
        raise ConfigError(
            f"--resume: stage {folder.name} was run with other settings ({quote(record.get('stage'))}); "
            "the recipe must not change under a run: start a new --out"
        )
    return record
