"""``prunekit run``: a recipe's stages one after another, each in ``DIR/NN-name/``.

Every stage is the prunekit command its method names, run as a child process (its own memory, its
own log; under torchrun in the process itself), so a stage does exactly what the same command typed
by hand does. A stage is finished when
its ``stage.json`` exists (written last, atomically); ``--resume`` skips finished stages and reruns a
killed one: a training stage with ``checkpoint_every`` continues from its latest Trainer checkpoint, a
lottery stage after its last finished round, any other stage starts again from its seeded beginning
(so it ends with the same model as an uninterrupted run). A failing stage
(a NaN loss, a bad option) stops the run with its error line and leaves the finished stages as they are.

Under ``torchrun`` every process runs the training stages together (in one process group for the
whole run); only the first writes anything, and the others wait for its folders.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from prunekit.errors import ConfigError, PrunekitError
from prunekit.io import atomic_output_dir, recover_output_dir, write_json_atomic, write_text_atomic
from prunekit.recipes.recipe import INPUT, Recipe, Stage
from prunekit.recipes.schema import METHODS, Method

RUN_FILE, RECIPE_FILE, STAGE_FILE, LOG_FILE = "run.json", "recipe.yaml", "stage.json", "log.txt"
TICKET_DIR = "ticket"  # lottery's winning ticket inside its folder


@dataclass
class RunState:
    """What the stages so far produced: model folders by stage name, the stage the chain is at, and the
    optimizer steps behind each model (its own and its ancestors': the control's budget)."""

    out: Path
    model: str
    data: str | None
    models: dict[str, str] = field(default_factory=dict)
    current: str = INPUT
    steps: dict[str, int] = field(default_factory=lambda: {INPUT: 0})
    records: list[dict] = field(default_factory=list)

    def resolve(self, value):
        if isinstance(value, str) and value.startswith("@"):
            return self.models[value[1:]]
        return value


def stage_folder(out: Path, index: int, stage: Stage) -> Path:
    return out / f"{index:02d}-{stage.name}"


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def prepare_out(out: Path, recipe: Recipe, model: str, data: str | None, resume: bool, overwrite: bool) -> None:
    """Create ``out`` (or check that it holds this run, for ``--resume``); save the run and recipe."""
    settings = {"model": model, "data": data}
    if not is_main_process():
        return  # the first process checks and writes; the others follow its folders
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / RUN_FILE).is_file():
            raise ConfigError(f"--out {out}: a folder that holds something other than a prunekit run; pick a new one")
        if resume:
            saved = json.loads((out / RUN_FILE).read_text())
            changed = [key for key in settings if _same_input(saved.get(key)) != _same_input(settings[key])]
            if changed:
                flags = ", ".join(f"--{key} was {saved.get(key)!r}" for key in changed)
                raise ConfigError(f"--resume: {out} was started with different inputs ({flags})")
        elif overwrite:
            shutil.rmtree(out)
        else:
            raise ConfigError(f"--out {out}: holds a run already; pass --resume to continue it or --overwrite")
    elif resume:
        raise ConfigError(f"--resume: {out} holds no run to continue")
    for index, stage in enumerate(recipe.stages, 1):
        _finished(stage_folder(out, index, stage), stage)  # a changed recipe is refused before anything is written
    out.mkdir(parents=True, exist_ok=True)
    if not (out / RUN_FILE).is_file():
        started = time.strftime("%Y-%m-%dT%H:%M:%S")
        write_json_atomic(out / RUN_FILE, {**settings, "recipe": recipe.origin, "started": started})
    write_text_atomic(out / RECIPE_FILE, recipe.dump())  # later stages may change on --resume


def _same_input(value: str | None) -> str | None:
    """A model or data path compared by the place it names (an alias such as minilm as given)."""
    return str(Path(value).resolve()) if value is not None and Path(value).exists() else value


def run_recipe(
    recipe: Recipe, model: str, data: str | None, out: str | os.PathLike, resume: bool = False, overwrite: bool = False
) -> list[dict]:
    """Run every stage (see the module docstring); returns the stage records."""
    out = Path(out)
    prepare_out(out, recipe, model, data, resume, overwrite)
    state = RunState(out, model, data, models={INPUT: model})
    for index, stage in enumerate(recipe.stages, 1):
        folder = stage_folder(out, index, stage)
        record = _finished(folder, stage)
        if record is None:
            print(f"\n== stage {folder.name} ({stage.method})", flush=True)
            record = _run_stage(stage, folder, state)
        else:
            print(f"== stage {folder.name} ({stage.method}): finished earlier, kept", flush=True)
        _advance(state, stage, record)
    return state.records


def _finished(folder: Path, stage: Stage) -> dict | None:
    path = folder / STAGE_FILE
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    if record.get("stage") != stage.as_dict():
        raise ConfigError(
            f"--resume: stage {folder.name} was run with other settings ({record.get('stage')}); "
            "the recipe must not change under a run: start a new --out"
        )
    return record


def _advance(state: RunState, stage: Stage, record: dict) -> None:
    state.records.append(record)
    if record.get("model") is None:
        return
    state.models[stage.name] = record["model"]
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
    """The prunekit command line of ``stage`` (``bench`` and ``export`` to hf run in this process)."""
    method = METHODS[stage.method]
    options = dict(stage.options)
    model = _input_of(stage, state)
    if stage.role == "control":
        options.pop("max_steps", None)  # its budget is the chain's
    if stage.method == "merge":  # the previous stage's adapter, merged into the model that stage started from
        options.setdefault("adapter", str(Path(model) / "adapter"))
        model = _record_input(state, model)
    argv = list(method.command)
    if method.chain_flag and not (stage.method == "distill" and "student_layers" in options):
        argv += [method.chain_flag, model]
    for words in method.fixed.values():
        argv += words
    if "data" in method.options and "data" not in options and state.data is not None:
        argv += ["--data", state.data]
    for key, value in options.items():
        argv += method.options[key].argv(state.resolve(value))
    if stage.role == "control":
        budget = state.steps[state.current]
        if budget < 1:
            raise ConfigError(
                f"stage {folder.name}: the control trains as many steps as the model before it took; none did"
            )
        argv += ["--max-steps", str(budget)]
    if options.get("checkpoint_every"):
        argv += ["--checkpoint-dir", str(checkpoint_dir(folder))]
    if method.makes_model:
        argv += ["--out", str(folder)]
        if resume_partial:
            argv.append("--resume")
    return argv


def checkpoint_dir(folder: Path) -> Path:
    """Where a stage with ``checkpoint_every`` keeps its Trainer checkpoints until it finishes."""
    return folder.parent / f".{folder.name}.checkpoints"


def _record_input(state: RunState, model: str) -> str:
    """The model the stage that made ``model`` started from (a merge's base)."""
    record = next((r for r in state.records if r.get("model") == model), None)
    return record["input"] if record else model


def _run_stage(stage: Stage, folder: Path, state: RunState) -> dict:
    method = METHODS[stage.method]
    started = time.time()
    record = {"stage": stage.as_dict(), "method": stage.method, "input": _input_of(stage, state)}
    if not is_main_process():
        if method.trains:
            _run_command(stage_argv(stage, folder, state), None)
        return _wait_for(folder)
    if method.makes_model:
        recover_output_dir(folder)
        partial = folder.parent / f".{folder.name}.partial"
        resume_partial = stage.method == "lottery" and partial.is_dir()
        argv = stage_argv(stage, folder, state, resume_partial)
        log = folder.parent / f".{folder.name}.log"
        if not (folder / "summary.json").is_file():  # else: finished, killed before its stage.json
            _run_command(argv, log, folder.name)
        _move_log(log, folder)
        shutil.rmtree(checkpoint_dir(folder), ignore_errors=True)  # the stage is done: nothing to continue
    else:
        with atomic_output_dir(folder) as tmp:
            argv = _run_in(stage, method, tmp, state)
    summary = json.loads((folder / "summary.json").read_text())
    model = _model_of(stage, folder, summary)
    record.update(argv=argv, model=model, seconds=round(time.time() - started, 1))
    record["train_steps"] = (summary.get("train") or {}).get("steps") if stage.method != "lottery" else None
    write_json_atomic(folder / STAGE_FILE, record)
    return record


def _run_in(stage: Stage, method: Method, tmp: Path, state: RunState) -> list[str]:
    """Stages whose results are files (evaluate, export) or that time the whole run (bench)."""
    from prunekit.recipes.timing import bench_stage

    if stage.method == "bench":
        bench_stage(state, stage.options, tmp / "summary.json")
        return []
    if stage.method == "export" and stage.options.get("format") == "hf":
        shutil.copytree(
            state.models[state.current],
            tmp / "model",
            ignore=shutil.ignore_patterns(STAGE_FILE, LOG_FILE, "summary.json"),
        )
        write_json_atomic(
            tmp / "summary.json",
            {"kind": "export", "format": "hf", "model": state.models[state.current], "path": "model"},
        )
        return []
    argv = [*stage_argv(stage, tmp, state), "--json", str(tmp / "summary.json")]
    if stage.method == "export":
        argv += ["--out", str(tmp / "model.onnx")]
    _run_command(argv, tmp / LOG_FILE, tmp.name)
    if stage.method == "export":  # the file's place once the stage folder is published
        summary = json.loads((tmp / "summary.json").read_text())
        write_json_atomic(tmp / "summary.json", {**summary, "path": "model.onnx"})
    return argv


def _model_of(stage: Stage, folder: Path, summary: dict) -> str | None:
    if not METHODS[stage.method].makes_model:
        return None
    if stage.method == "lottery":  # the winning ticket, if a round was within the tolerance of dense
        return str(folder / TICKET_DIR) if (folder / TICKET_DIR).is_dir() else None
    return str(folder)


def _move_log(log: Path, folder: Path) -> None:
    if log.is_file() and folder.is_dir():
        os.replace(log, folder / LOG_FILE)


def _wait_for(folder: Path) -> dict:
    """Another torchrun process: the first one writes the stage's folder; wait for it."""
    while not (folder / STAGE_FILE).is_file():
        time.sleep(1)
    return json.loads((folder / STAGE_FILE).read_text())


def _die_with_parent() -> None:
    """In the child, before exec: a SIGKILLed ``prunekit run`` takes its stage down with it (Linux)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _run_command(argv: list[str], log: Path | None, label: str = "") -> None:
    """Run ``prunekit ARGV`` as a child; its output goes to the console and to ``log``. Under torchrun
    the stage runs in this process instead: every stage then trains in the one process group the
    launcher set up (successive child groups deadlocked in gloo's rendezvous)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from prunekit.cli import main

        if main(argv) != 0:  # main printed the error line
            raise PrunekitError(f"stage {label} stopped (see the error above); rerun with --resume once fixed")
        return
    command = [sys.executable, "-m", "prunekit.cli", *argv]
    sink = open(log, "wb") if log is not None else None
    try:
        if sink is not None:
            sink.write(("$ prunekit " + " ".join(argv) + "\n").encode())
            sink.flush()
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        tail = b""
        try:
            while chunk := child.stdout.read1(65536):
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
                if sink is not None:
                    sink.write(chunk)
                    sink.flush()
                tail = (tail + chunk)[-4096:]
            code = child.wait()
        except BaseException:
            child.terminate()
            child.wait()
            raise
    finally:
        if sink is not None:
            sink.close()
    if code == 130:
        raise KeyboardInterrupt
    if code != 0:
        lines = [line.strip() for line in tail.decode(errors="replace").replace("\r", "\n").splitlines()]
        errors = [line for line in lines if ": error: " in line]
        reason = errors[-1].split(": error: ", 1)[1] if errors else (lines[-1] if lines else f"exit code {code}")
        raise PrunekitError(
            f"stage {label} stopped: {reason}. The stages before it are kept; fix the recipe (or --set) and "
            "rerun with --resume"
        )
