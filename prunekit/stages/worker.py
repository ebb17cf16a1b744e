"""A stage in a worker process, for stages that may exhaust memory: the kernel's out-of-memory killer
then ends the worker, not the run.

The parent writes a request as JSON — the stage's registered name, the module that registers it, its
options (recipe keys), the keys the stage named itself, its inputs — and starts ``python -m
prunekit.stages.worker FOLDER``; the worker builds the config from the options (the same
``Stage.build_config`` as in process), runs ``execute`` and writes ``result.json``: the summary, or the
error (its type and message). No command line is built and no printed text is parsed; the worker's
console output is passed on as it comes (into the stage's log under the recipe runner).
"""

from __future__ import annotations

import codecs
import importlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

import prunekit.errors as errors
from prunekit.errors import PrunekitError, first_line
from prunekit.logs import configure_logging
from prunekit.stages.base import STAGES, Stage, StageInputs, execute

REQUEST, RESULT = "request.json", "result.json"


def execute_isolated(
    stage: Stage,
    options: dict[str, Any],
    inputs: StageInputs,
    given: tuple[str, ...] | None = None,
    checkpoint_dir: str | None = None,
) -> dict[str, Any]:
    """``execute`` the stage built from ``options`` in a worker process; returns its summary. Its error
    comes back as the same exception type with the same message; a worker the kernel killed (SIGKILL:
    most likely out of memory) or that died without a result is a one-line ``PrunekitError``."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise errors.ConfigError("isolated: a stage in a worker process runs in one process, not under torchrun")
    with tempfile.TemporaryDirectory(prefix="prunekit-worker-") as folder:
        request = {
            "stage": stage.name,
            "module": stage.run.__module__,
            "options": options,
            "given": None if given is None else list(given),
            "inputs": asdict(inputs),
            "checkpoint_dir": checkpoint_dir,
            "path": sys.path,
            "verbose": logging.getLogger().isEnabledFor(logging.INFO),
        }
        Path(folder, REQUEST).write_text(json.dumps(request), encoding="utf-8")
        code = _run_worker(folder)
        result_file = Path(folder, RESULT)
        if result_file.is_file():
            return _result(json.loads(result_file.read_text(encoding="utf-8")))
    if code < 0:
        name = signal.Signals(-code).name
        hint = " (most likely out of memory)" if -code == signal.SIGKILL else ""
        raise PrunekitError(f"the worker process running it was killed by {name}{hint}; nothing of it was kept")
    raise PrunekitError(f"the worker process running it exited with code {code} and no result")


def _run_worker(folder: str) -> int:
    """Start the worker on ``folder``, pass its console output on (to ``sys.stdout``, which the runner
    tees into the stage's log) as it comes, and return its exit code (negative: the signal that ended it)."""
    worker = subprocess.Popen(
        [sys.executable, "-m", "prunekit.stages.worker", folder], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    text = codecs.getincrementaldecoder("utf-8")(errors="replace")
    try:
        while chunk := os.read(worker.stdout.fileno(), 65536):
            sys.stdout.write(text.decode(chunk))
            sys.stdout.flush()
    except BaseException:
        worker.kill()  # the parent is stopping (Ctrl-C, SIGTERM): the worker goes with it
        raise
    finally:
        worker.stdout.close()
        code = worker.wait()
    return code


def _result(result: dict[str, Any]) -> dict[str, Any]:
    if "summary" in result:
        return result["summary"]
    error = result["error"]
    kind = getattr(errors, error["type"], None)
    if isinstance(kind, type) and issubclass(kind, PrunekitError):
        raise kind(error["message"])
    raise PrunekitError(f"{error['type']}: {error['message']} (the traceback is in the log above)")


def main(folder: str) -> int:
    """The worker: run the request in ``folder``, write ``result.json`` (summary or error)."""
    request = json.loads(Path(folder, REQUEST).read_text(encoding="utf-8"))
    configure_logging(request["verbose"])
    sys.path[:] = request["path"]
    try:
        importlib.import_module(request["module"])  # a stage registered outside prunekit registers itself
        stage = STAGES[request["stage"]]
        config = stage.build_config(request["options"], given=request["given"])
        raw = request["inputs"]
        inputs = StageInputs(**{**raw, "run_models": {k: tuple(v) for k, v in raw["run_models"].items()}})
        result: dict[str, Any] = {"summary": execute(stage, config, inputs, request["checkpoint_dir"])}
    except PrunekitError as err:
        result = {"error": {"type": type(err).__name__, "message": str(err)}}
    except Exception as err:  # a bug: its traceback goes to the console (and the stage's log)
        traceback.print_exc()
        result = {"error": {"type": type(err).__name__, "message": first_line(err)}}
    temporary = Path(folder, RESULT + ".tmp")
    temporary.write_text(json.dumps(result), encoding="utf-8")
    os.replace(temporary, Path(folder, RESULT))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
