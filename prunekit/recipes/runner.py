"""``prunekit run``: a recipe's stages one after another, each in ``DIR/NN-name/``.

Every stage runs in this process: its method's registered stage (``prunekit.stages``) is built from the
stage's options, its context loaded from the previous stage's folder, and its result saved there with
its summary.json — exactly what the command of the same name does, through the same code. Its console
output also goes to its ``log.txt``, under a first line that is the command doing the same by hand. A
stage is finished when its ``stage.json`` exists (written last, atomically); ``--resume`` skips finished
stages and reruns a stopped one: a training stage with ``checkpoint_every`` continues from its latest
Trainer checkpoint, a lottery stage after its last finished round, any other stage starts again from its
seeded beginning (so it ends with the same model as an uninterrupted run). A failing stage (a NaN loss,
a bad option) stops the run with an error naming the stage, and leaves the finished stages as they are.

A run folder is self-contained: ``stage.json`` names the run's models relative to the run folder, and
a resumed run finds each finished stage's model in that stage's own folder, so a copied or moved run
continues from its own stages. ``--overwrite`` builds the new run beside the old one (``.OUT.partial``)
and swaps it in only once it is complete (``publish_run``); ``--resume`` continues a stopped one there.

Under ``torchrun`` every process runs the training stages together (in one process group for the
whole run); only the first writes anything, and the others wait for its folders.
"""

from __future__ import annotations

import contextlib
import gc
import io
import os
import shutil
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from prunekit.errors import ConfigError, PrunekitError, first_line, quote
from prunekit.io import (
    atomic_output_dir,
    read_json,
    recover_output_dir,
    replace_dir,
    write_json_atomic,
    write_text_atomic,
)
from prunekit.models import WEIGHT_FILES
from prunekit.recipes.recipe import INPUT, Recipe, Stage
from prunekit.recipes.schema import METHODS

RUN_FILE, RECIPE_FILE, STAGE_FILE, LOG_FILE = "run.json", "recipe.yaml", "stage.json", "log.txt"
TICKET_DIR = "ticket"  # lottery's winning ticket inside its folder


@dataclass
class RunState:
    """What the stages so far produced: model folders by stage name, the stage each model started from,
    the stage the chain is at, and the optimizer steps behind each model (its own and its ancestors':
    the control's budget). ``out`` is the folder the run is in."""

    out: Path
    model: str
    data: str | None
    models: dict[str, str] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    current: str = INPUT
    steps: dict[str, int] = field(default_factory=lambda: {INPUT: 0})
    records: list[dict] = field(default_factory=list)

    def resolve(self, value):
        if isinstance(value, str) and value.startswith("@"):
            return self.models[value[1:]]
        return value


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
    return {"model": model, "data": data, "model_path": _same_input(model), "data_path": _same_input(data)}


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
        _finished(stage_folder(folder, index, stage, recipe), stage)  # a changed recipe: refused before any work


def _record_run(folder: Path, recipe: Recipe, settings: dict) -> None:
    """Refuse a recipe that changed under the finished stages in ``folder``, then save the run's inputs
    (once) and the recipe (later stages may change on ``--resume``)."""
    for index, stage in enumerate(recipe.stages, 1):
        _finished(stage_folder(folder, index, stage, recipe), stage)
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / RUN_FILE).is_file():
        started = time.strftime("%Y-%m-%dT%H:%M:%S")
        write_json_atomic(folder / RUN_FILE, {**settings, "recipe": recipe.origin, "started": started})
    write_text_atomic(folder / RECIPE_FILE, recipe.dump())


def publish_run(folder: Path, out: Path) -> None:
    """Put a run finished in its staging folder in place of ``out``: the earlier run goes only now."""
    if is_main_process() and folder != out:
        replace_dir(folder, out)


def _same_input(value: str | None) -> str | None:
    """A model or data path compared by the place it names (an alias such as minilm as given)."""
    return str(Path(value).resolve()) if value is not None and Path(value).exists() else value


def _saved_input(saved: dict, key: str) -> str | None:
    """An input as run.json recorded it: the place it named (older runs recorded only what was typed)."""
    return saved[f"{key}_path"] if f"{key}_path" in saved else _same_input(saved.get(key))


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


def run_recipe(
    recipe: Recipe, model: str, data: str | None, out: str | os.PathLike, resume: bool = False, overwrite: bool = False
) -> Path:
    """Run every stage (see the module docstring); returns the folder that holds the finished run:
    ``out``, or with ``--overwrite`` the staging folder that ``publish_run`` then swaps in."""
    out = Path(out)
    folder = run_folder(out, resume, overwrite)
    prepare_out(folder, out, recipe, model, data, resume)
    return run_stages(recipe, model, data, folder)


def run_stages(recipe: Recipe, model: str, data: str | None, folder: Path) -> Path:
    """The stages of ``recipe`` in ``folder``, finished ones kept (a command that manages the folder
    itself, such as ``compress`` with its staging, calls this directly). Returns ``folder``."""
    folder = Path(folder)
    if is_main_process():
        _record_run(folder, recipe, input_settings(model, data))
    state = RunState(folder, model, data, models={INPUT: model})
    for index, stage in enumerate(recipe.stages, 1):
        stage_dir = stage_folder(folder, index, stage, recipe)
        record = _finished(stage_dir, stage)
        if record is None:
            print(f"\n== stage {stage_dir.name} ({stage.method})", flush=True)
            record = _run_stage(stage, stage_dir, state, index)
        else:
            print(f"== stage {stage_dir.name} ({stage.method}): finished earlier, kept", flush=True)
        _advance(state, stage, stage_dir, record)
    return folder


def _finished(folder: Path, stage: Stage) -> dict | None:
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


def _advance(state: RunState, stage: Stage, folder: Path, record: dict) -> None:
    """Record a finished stage. Its model is looked up in its own folder, never through a path saved in
    stage.json."""
    state.records.append(record)
    model = _model_of(stage, folder)
    if model is None:
        return
    state.models[stage.name] = model
    state.sources[stage.name] = _input_name(stage, state)
    state.steps[stage.name] = state.steps[_input_name(stage, state)] + (record.get("train_steps") or 0)
    if stage.role != "control":  # the control is a reference, not a step of the chain
        state.current = stage.name


def _input_name(stage: Stage, state: RunState) -> str:
    if stage.role == "control":
        return INPUT
    return stage.source or state.current


def _input_of(stage: Stage, state: RunState) -> str:
    return state.models[_input_name(stage, state)]


def stage_argv(stage: Stage, folder: Path, state: RunState, resume_partial: bool = False) -> list[str]:
    """The prunekit command line doing what ``stage`` does, for its record and log (the stage itself runs
    in this process)."""
    method = METHODS[stage.method]
    options = _stage_options(stage, state)
    model = _model_input(stage, state)
    argv = list(method.command)
    if method.chain_flag and model is not None:
        argv += [method.chain_flag, model]
    argv += method.fixed_argv()
    for key, value in options.items():
        argv += method.options[key].argv(value)
    if options.get("checkpoint_every"):
        argv += ["--checkpoint-dir", str(checkpoint_dir(folder))]
    if method.makes_model:
        argv += ["--out", str(folder)]
        if resume_partial:
            argv.append("--resume")
    return argv


def _stage_options(stage: Stage, state: RunState) -> dict:
    """The stage's options as its stage config takes them: ``@stage`` references made folders, the run's
    ``--data`` where the stage names none, a merge's adapter, a control's step budget."""
    method = METHODS[stage.method]
    options = {key: state.resolve(value) for key, value in stage.options.items()}
    if "data" in method.options and "data" not in options and state.data is not None:
        options = {"data": state.data, **options}
    if stage.method == "merge":  # the previous stage's adapter, merged into the model that stage started from
        options.setdefault("adapter", str(Path(_input_of(stage, state)) / "adapter"))
    if stage.role == "control":  # its budget is the chain's
        budget = state.steps[state.current]
        if budget < 1:
            raise ConfigError("the control trains as many steps as the model before it took; none did")
        options["max_steps"] = budget
    return options


def _model_input(stage: Stage, state: RunState) -> str | None:
    """The model the stage starts from: the chain's (a merge: the base its adapter was trained on; a
    distill stage building its student from the teacher: none)."""
    if stage.method == "bench" or (stage.method == "distill" and "student_layers" in stage.options):
        return None
    if stage.method == "merge":
        made_by = _input_name(stage, state)
        return state.models[state.sources.get(made_by, made_by)]
    return _input_of(stage, state)


def checkpoint_dir(folder: Path) -> Path:
    """Where a stage with ``checkpoint_every`` keeps its Trainer checkpoints until it finishes."""
    return folder.parent / f".{folder.name}.checkpoints"


def _run_stage(stage: Stage, folder: Path, state: RunState, index: int) -> dict:
    from prunekit.stages import STAGES

    registered = STAGES[stage.method]
    started = time.time()
    record = {"stage": stage.as_dict(), "index": index, "method": stage.method,
              "input": _shown(_input_of(stage, state), state)}  # fmt: skip
    try:
        config = registered.build_config(_stage_options(stage, state))
        if not is_main_process():
            if registered.trains:
                _execute(registered, config, stage, folder, state)
            _everyone_here()  # the first process has written the stage's folder and record
            return read_json(folder / STAGE_FILE)
        if registered.makes_model:
            recover_output_dir(folder)
            partial = folder.parent / f".{folder.name}.partial"
            resume_partial = stage.method == "lottery" and partial.is_dir()
            argv = stage_argv(stage, folder, state, resume_partial)
            log = folder.parent / f".{folder.name}.log"
            if not _complete(stage, folder):  # else: finished, killed before its stage.json
                with _logged(log, argv):
                    _execute(registered, config, stage, folder, state, resume_partial)
            _move_log(log, folder)
            shutil.rmtree(checkpoint_dir(folder), ignore_errors=True)  # the stage is done: nothing to continue
        else:
            with atomic_output_dir(folder) as tmp:
                argv = _run_in(registered, config, stage, tmp, state)
    except PrunekitError as err:
        raise PrunekitError(
            f"stage {folder.name} stopped: {err}. The stages before it are kept; fix the recipe (or --set) and "
            "rerun with --resume"
        ) from None
    except Exception as err:  # a bug: the traceback went to the console and the stage's log
        raise PrunekitError(f"stage {folder.name} stopped: {type(err).__name__}: {first_line(err)}") from err
    summary = read_json(folder / "summary.json", f"stage {folder.name}'s result")
    record.update(argv=argv, model=_shown(_model_of(stage, folder), state), seconds=round(time.time() - started, 1))
    record["train_steps"] = (summary.get("train") or {}).get("steps") if stage.method != "lottery" else None
    write_json_atomic(folder / STAGE_FILE, record)
    _everyone_here()
    return record


def _execute(registered, config, stage: Stage, folder: Path, state: RunState, resume: bool = False) -> dict:
    """A model-making stage, from its input model into ``folder`` (training in its checkpoint folder
    when it keeps checkpoints)."""
    from prunekit.stages import StageInputs, execute

    inputs = StageInputs(_model_input(stage, state), out=str(folder), resume=resume)
    checkpoints = str(checkpoint_dir(folder)) if stage.options.get("checkpoint_every") else None
    summary = execute(registered, config, inputs, checkpoints)
    gc.collect()  # the stage's models go before the next stage loads its own
    return summary


def _complete(stage: Stage, folder: Path) -> bool:
    """Whether a stage folder without its stage.json holds the stage's whole result (the run was killed
    just before writing stage.json). A folder with less (emptied or damaged by hand) is removed, so the
    stage runs again instead of failing every later --resume."""
    if not folder.exists():
        return False
    try:
        summary = read_json(folder / "summary.json")
    except ConfigError:
        summary = None
    if stage.method == "lottery":
        whole = summary is not None and isinstance(summary.get("rounds"), list)
    else:
        weights = any((folder / name).is_file() for name in WEIGHT_FILES)
        whole = summary is not None and (folder / "config.json").is_file() and weights
    if not whole:
        print(f"== stage {folder.name}: its folder is incomplete (no stage.json, and its summary or weights are "
              "missing or unreadable); running the stage again", flush=True)  # fmt: skip
        shutil.rmtree(folder) if folder.is_dir() else folder.unlink()
    return whole


def _shown(model: str | None, state: RunState) -> str | None:
    """A model as stage.json records it: relative to the run folder when it is one of the run's, else the
    place it names (or an alias as given)."""
    if model is None:
        return None
    path, run = Path(model).absolute(), state.out.absolute()
    return str(path.relative_to(run)) if path.is_relative_to(run) else _same_input(model)


def _run_in(registered, config, stage: Stage, tmp: Path, state: RunState) -> list[str]:
    """Stages whose results are files (evaluate, export) or that time the whole run (bench), made in
    ``tmp``; returns the record's command line."""
    from prunekit.stages import StageInputs, execute

    if stage.method == "bench":
        roles = {r["stage"]["name"]: r["stage"].get("role") for r in state.records}
        run_models = {name: (folder, roles.get(name)) for name, folder in state.models.items() if name != INPUT}
        inputs, argv = StageInputs(state.model, run_models=run_models), []
    else:
        argv = [*stage_argv(stage, tmp, state), "--json", str(tmp / "summary.json")]
        target = {"onnx": "model.onnx", "hf": "model"}.get(config.format) if stage.method == "export" else None
        if target == "model.onnx":
            argv += ["--out", str(tmp / target)]
        elif target == "model":
            argv = []
        inputs = StageInputs(_model_input(stage, state), out=str(tmp / target) if target else None)
    with _logged(tmp / LOG_FILE, argv):
        summary = execute(registered, config, inputs)
    if stage.method == "export":  # the file's place once the stage folder is published
        summary = {**summary, "path": target}
    write_json_atomic(tmp / "summary.json", summary)
    return argv


def _model_of(stage: Stage, folder: Path) -> str | None:
    if not METHODS[stage.method].makes_model:
        return None
    if stage.method == "lottery":  # the winning ticket, if a round was within the tolerance of dense
        return str(folder / TICKET_DIR) if (folder / TICKET_DIR).is_dir() else None
    return str(folder)


def _move_log(log: Path, folder: Path) -> None:
    if log.is_file() and folder.is_dir():
        os.replace(log, folder / LOG_FILE)


def _everyone_here() -> None:
    """Under torchrun, wait until every process has finished the stage: the others then read the record
    the first one wrote (before it could move the run folder away)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        PartialState().wait_for_everyone()


class _Tee(io.TextIOBase):
    """Writes to the console stream and to the stage's log."""

    def __init__(self, stream, log) -> None:
        self.stream, self.log = stream, log

    def write(self, text: str) -> int:
        self.stream.write(text)
        self.log.write(text)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()
        self.log.flush()


@contextlib.contextmanager
def _logged(log: Path, argv: list[str]):
    """The stage's console output (stdout and stderr) also goes to ``log``, after a first line that is
    the command doing the same by hand; a traceback of a failing stage goes there too."""
    with open(log, "w", encoding="utf-8") as sink:
        sink.write("$ prunekit " + " ".join(argv) + "\n")
        with contextlib.redirect_stdout(_Tee(sys.stdout, sink)), contextlib.redirect_stderr(_Tee(sys.stderr, sink)):
            try:
                yield
            except Exception as err:
                if not isinstance(err, PrunekitError):
                    traceback.print_exc()
                raise
