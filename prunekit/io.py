"""Safe writes: results and model folders appear whole or not at all, and never over the user's inputs.

Folder swap protocol (``atomic_output_dir``): the work is written to ``.X.tmp-PID-*`` beside ``X``;
on success an old ``X`` is renamed to ``.X.old-PID``, the new folder renamed to ``X``, then the old
one removed. A run killed between the two renames leaves ``.X.old-PID`` and no ``X``: the next
command writing ``X`` (``recover_output_dir``) renames it back, and removes siblings of runs that
are no longer alive, saying what it did.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from prunekit.errors import ConfigError

WORK_PREFIX = "prunekit-work-"  # temp training folders in $TMPDIR: prunekit-work-PID-*


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def write_json_atomic(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write ``payload`` as JSON to ``path`` through a temp file and a rename."""
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=False, default=_json_default) + "\n")


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temp file and a rename."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside ``path`` to write; on success it replaces ``path`` (readable like any
    other output: mkstemp creates 0600), on failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_json(path: str | os.PathLike, what: str = "") -> dict[str, Any]:
    """A JSON object from ``path``; a missing, unreadable or malformed file (or one that holds no object)
    is a one-line ``ConfigError`` naming the file (``what`` says what it should be)."""
    path = Path(path)
    label = f"{path}" + (f" ({what})" if what else "")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{label}: no such file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{label}: not a UTF-8 text file") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"{label}: not valid JSON (line {err.lineno}: {err.msg})") from None
    except OSError as err:
        raise ConfigError(f"{label}: cannot read it ({err.strerror or err})") from None
    if not isinstance(payload, dict):
        raise ConfigError(f"{label}: expected a JSON object, found {type(payload).__name__}")
    return payload


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# ---------------------------------------------------------------- checks before any work


def _writable_parent(flag: str, path: Path) -> None:
    """The nearest existing ancestor of ``path`` must be a folder we can create entries in: a file is
    created there and removed (permission bits say yes for root, or in /proc, where nothing can be made)."""
    parent = path.parent
    while not parent.exists():
        if parent.parent == parent:
            break
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{flag} {path}: {parent} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".prunekit-probe-", dir=parent)
    except OSError as err:
        reason = "permission denied" if isinstance(err, PermissionError) else (err.strerror or str(err))
        raise ConfigError(f"{flag} {path}: cannot write in {parent} ({reason})") from None
    os.close(fd)
    os.unlink(probe)


def _overlaps(a: Path, b: Path) -> bool:
    return a == b or a in b.parents or b in a.parents


def check_output_dir(
    out: str | os.PathLike, overwrite: bool, inputs: Iterable[tuple[str, str | os.PathLike | None]] = ()
) -> Path:
    """Refuse an ``out`` that would destroy something, before any work is done.

    ``inputs`` are ``(flag, path)`` pairs (the model, teacher, data ...): ``out`` may not be, contain
    or lie inside any of them. Nor may it be the current folder, a filesystem root or the home folder,
    an existing non-empty folder without ``overwrite``, or in a place we cannot write.
    """
    out = Path(out).expanduser()
    resolved = out.resolve()
    if resolved == Path(resolved.anchor) or resolved == Path.cwd().resolve() or resolved == Path.home().resolve():
        raise ConfigError(f"--out {out}: refusing to write over the current, home or root folder; name a new folder")
    if resolved in Path.cwd().resolve().parents:
        raise ConfigError(f"--out {out}: contains the current folder; name a new folder")
    for flag, value in inputs:
        if value is None or not Path(value).expanduser().exists():
            continue
        if _overlaps(resolved, Path(value).expanduser().resolve()):
            raise ConfigError(f"--out {out}: overlaps {flag} {value}; write the result to a separate folder")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"--out {out}: folder exists and is not empty; pass --overwrite to replace it")
    _writable_parent("--out", out)
    return out


def check_output_file(out: str | os.PathLike, overwrite: bool, inputs: Iterable[tuple[str, str | os.PathLike]]) -> Path:
    """An ``--out`` that is one file: not a folder, not inside an input folder, replaced only with
    ``overwrite``, in a place we can write."""
    out = Path(out).expanduser()
    for flag, value in inputs:
        if value is not None and _overlaps(out.resolve(), Path(value).expanduser().resolve()):
            raise ConfigError(f"--out {out}: inside {flag} {value}; write the file outside the model folder")
    if out.is_dir():
        raise ConfigError(f"--out {out}: is a folder; expected a file name such as model.onnx")
    if out.exists() and not overwrite:
        raise ConfigError(f"--out {out}: file exists; pass --overwrite to replace it")
    _writable_parent("--out", out)
    return out


def check_json_path(
    path: str | os.PathLike | None,
    flag: str = "--json",
    inputs: Iterable[tuple[str, str | os.PathLike | None]] = (),
) -> None:
    """A results file we will be able to write at the end: not a folder, not an input nor inside one
    (``inputs``: ``(flag, path)`` pairs — models, data, ``--out``), in a writable place."""
    if path is None:
        return
    path = Path(path).expanduser()
    if path.is_dir():
        raise ConfigError(f"{flag} {path}: is a folder; expected a file name such as result.json")
    for input_flag, value in inputs:
        if value is None or (not Path(value).expanduser().exists() and input_flag != "--out"):
            continue  # an input that names no file (a hub id); --out need not exist yet
        if _overlaps(path.resolve(), Path(value).expanduser().resolve()):
            raise ConfigError(
                f"{flag} {path}: is or lies inside {input_flag} {value}; write the results file somewhere else"
            )
    if path.exists() and not os.access(path, os.W_OK):
        raise ConfigError(f"{flag} {path}: file is not writable")
    _writable_parent(flag, path)


# ---------------------------------------------------------------- crash-safe folder swap


def _sibling_pid(name: str, out_name: str, kind: str) -> int | None:
    match = re.fullmatch(rf"\.{re.escape(out_name)}\.{kind}-(\d+)(?:-.*)?", name)
    return int(match.group(1)) if match else None


def recover_output_dir(out: str | os.PathLike) -> list[str]:
    """Undo what a killed run left beside ``out``; returns what was done (also printed).

    ``.X.old-PID`` with ``X`` missing is the previous result, renamed back; other ``.X.old-*`` and
    ``.X.tmp-*`` of dead processes are removed.
    """
    out = Path(out)
    if not out.parent.is_dir():
        return []
    done = []
    for kind in ("old", "tmp"):
        for sibling in sorted(out.parent.glob(f".{out.name}.{kind}-*")):
            pid = _sibling_pid(sibling.name, out.name, kind)
            if pid is None or _pid_alive(pid):
                continue
            if kind == "old" and not out.exists():
                os.replace(sibling, out)
                done.append(f"recovered {out} from {sibling.name}, left by a run that was killed while saving")
            else:
                if sibling.is_dir():
                    shutil.rmtree(sibling, ignore_errors=True)
                else:
                    sibling.unlink(missing_ok=True)  # a file output's temp file (export)
                done.append(f"removed {sibling}, left by a killed run")
    for line in done:
        print(f"prunekit: {line}", flush=True)
    return done


@contextlib.contextmanager
def atomic_output_dir(out: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temp folder beside ``out``; on success it replaces ``out`` (see the module docstring).

    On failure the temp folder is removed and an existing ``out`` is left untouched.
    """
    out = Path(out)
    recover_output_dir(out)
    out = check_output_dir(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp creates 0700
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for path in tmp.rglob("*"):  # safetensors writes 0600 files; the rest of a model folder is shared
        if path.is_file():
            os.chmod(path, 0o666 & ~_umask())
    replace_dir(tmp, out)


def replace_dir(new: Path, out: Path) -> None:
    """Put folder ``new`` at ``out``; at every instant either the old or the new ``out`` is recoverable."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
    os.replace(new, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------- long runs: staged, resumable


def staging_dir(
    out: str | os.PathLike,
    settings: dict[str, Any],
    config_file: str,
    resume: bool,
    overwrite: bool,
    may_change: Iterable[str] = (),
) -> Path:
    """``.OUT.partial`` beside ``out``, for a long run's pieces (rounds, stages) to land in one by one;
    ``replace_dir(staging, out)`` publishes it at the end. ``settings`` are saved in ``config_file``.

    ``resume`` continues a killed run's staging folder (or a finished ``out``, copied there first,
    to add to it), refusing if its settings differ except in ``may_change``; without it a leftover
    staging folder is an error unless ``overwrite`` discards it.
    """
    out = Path(out)
    staging = out.parent / f".{out.name}.partial"
    settings = json.loads(json.dumps(settings))  # compared as saved: JSON keys are strings, tuples lists
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun: the first process prepares it, the others only read
        return staging
    if resume:
        if not (staging / config_file).is_file() and (out / config_file).is_file():
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(out, staging)
        if (staging / config_file).is_file():
            saved = json.loads((staging / config_file).read_text())
            changed = [key for key in settings if key not in may_change and saved.get(key) != settings[key]]
            if changed:
                raise ConfigError(
                    f"--resume: {out} was started with different settings ({', '.join(changed)}); "
                    "pass the same flags or start a new --out"
                )
            write_json_atomic(staging / config_file, settings)
            return staging
    elif staging.exists() and not overwrite:
        raise ConfigError(
            f"--out {out}: an unfinished run is kept in {staging}; pass --resume to continue it "
            "or --overwrite to start again"
        )
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    write_json_atomic(staging / config_file, settings)
    return staging


# ---------------------------------------------------------------- temp work folders


def clean_stale_work_dirs() -> None:
    """Remove ``$TMPDIR/prunekit-work-PID-*`` folders of processes that no longer run (killed runs)."""
    root = Path(tempfile.gettempdir())
    for folder in root.glob(f"{WORK_PREFIX}*"):
        match = re.match(rf"{WORK_PREFIX}(\d+)-", folder.name)
        if match and not _pid_alive(int(match.group(1))):
            shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def work_dir(kind: str) -> Iterator[str]:
    """A scratch folder in ``$TMPDIR`` for the Trainer, removed on every exit path.

    A SIGKILL leaves it behind; the next prunekit command removes it (``clean_stale_work_dirs``).
    """
    clean_stale_work_dirs()
    with tempfile.TemporaryDirectory(prefix=f"{WORK_PREFIX}{os.getpid()}-{kind}-") as folder:
        yield folder
