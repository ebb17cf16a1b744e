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

from prunekit.errors import ConfigError, PrunekitError, first_line
from prunekit.io import (
    atomic_output_dir,
    read_json,
    recover_output_dir,
    write_json_atomic,
)
from prunekit.models import WEIGHT_FILES
from prunekit.recipes.recipe import INPUT, Recipe, Stage
from prunekit.recipes.run_folder import (
    LOG_FILE,
    STAGE_FILE,
    TICKET_DIR,
    finished_record,
    input_settings,
    is_main_process,
    prepare_out,
    record_run,
    run_folder,
    same_input,
    stage_folder,
)
from prunekit.recipes.schema import METHODS


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
        record_run(folder, recipe, input_settings(model, data))
    state = RunState(folder, model, data, models={INPUT: model})
    started, count = time.monotonic(), len(recipe.stages)
    for index, stage in enumerate(recipe.stages, 1):
        stage_dir = stage_folder(folder, index, stage, recipe)
        record = finished_record(stage_dir, stage)
        if record is None:
            # a training stage's progress bar shows its own ETA; each stage says how long it took
            print(f"\n== stage {index}/{count} {stage_dir.name} ({stage.method})", flush=True)
            stage_started = time.monotonic()
            record = _run_stage(stage, stage_dir, state, index)
            took, total = _duration(time.monotonic() - stage_started), _duration(time.monotonic() - started)
            print(f"== stage {index}/{count} {stage_dir.name} done in {took} (run so far {total})", flush=True)
        else:
            print(f"== stage {index}/{count} {stage_dir.name} ({stage.method}): finished earlier, kept", flush=True)
        _advance(state, stage, stage_dir, record)
    return folder


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


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
        config = registered.build_config(_stage_options(stage, state), given=stage.own)
        if not is_main_process():
            if registered.trains:
                _execute(registered, config, stage, folder, state)
            _everyone_here()  # the first process has written the stage's folder and record
            return read_json(folder / STAGE_FILE)
        if registered.makes_model:
            recover_output_dir(folder)
            partial = folder.parent / f".{folder.name}.partial"
            resume_partial = partial.is_dir()  # a stage that keeps its progress there (lottery, --stream) goes on
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
    from prunekit.stages import StageInputs

    inputs = StageInputs(_model_input(stage, state), out=str(folder), resume=resume)
    checkpoints = str(checkpoint_dir(folder)) if stage.options.get("checkpoint_every") else None
    summary = _call(registered, config, stage, state, inputs, checkpoints)
    gc.collect()  # the stage's models go before the next stage loads its own
    return summary


def _call(registered, config, stage: Stage, state: RunState, inputs, checkpoints: str | None = None) -> dict:
    """``execute`` the stage here, or (``isolated: true``) in a worker process given its options."""
    from prunekit.stages import execute
    from prunekit.stages.worker import execute_isolated

    if stage.isolated:
        return execute_isolated(registered, _stage_options(stage, state), inputs, stage.own, checkpoints)
    return execute(registered, config, inputs, checkpoints)


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
    return str(path.relative_to(run)) if path.is_relative_to(run) else same_input(model)


def _run_in(registered, config, stage: Stage, tmp: Path, state: RunState) -> list[str]:
    """Stages whose results are files (evaluate, export) or that time the whole run (bench), made in
    ``tmp``; returns the record's command line."""
    from prunekit.stages import StageInputs

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
        summary = _call(registered, config, stage, state, inputs)
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
