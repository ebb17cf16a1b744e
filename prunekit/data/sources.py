"""Where a task's data lies: the split files of a GLUE folder, of a folder of your own tables, a single
file, or (when no such path exists and the name looks like one) a hub dataset."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from prunekit.data.tasks import GLUE_TASKS, Column, glue_task, normalise_task_name
from prunekit.errors import ConfigError, DataError

TABLE_SUFFIXES = (".tsv", ".csv", ".jsonl", ".json")
EVAL_STEMS = ("dev", "validation", "eval")


def is_text_corpus(data: str | None, train_file: str | None = None, eval_file: str | None = None) -> bool:
    """Whether the data flags name plain text: a ``.txt`` file, or a folder holding ``train.txt``/``dev.txt``."""
    given = [Path(p).expanduser() for p in (data, train_file, eval_file) if p is not None]
    if not given:
        return False
    first = given[0]
    if first.is_dir():
        return any((first / f"{stem}.txt").is_file() for stem in ("train", *EVAL_STEMS))
    return first.suffix == ".txt"


def locate_splits(
    data: str | None,
    task: str | None,
    train_file: str | None,
    eval_file: str | None,
    need_train: bool,
    need_eval: bool,
    columns: tuple[Column, ...] | None,
) -> tuple[Path | None, Path | None, str | None] | None:
    """The split files and GLUE task name (``None`` for custom data); ``None`` for a hub dataset."""
    for flag, value in (("--train", train_file), ("--eval", eval_file)):
        if value is not None and not Path(value).is_file():
            raise DataError(f"{flag} {value}: file not found")
    if task is not None:
        glue_task(task)  # unknown task names fail here, before any file is read

    if data is None:
        if (need_train and train_file is None) or (need_eval and eval_file is None):
            raise ConfigError("no data given: pass --data, or --train and --eval")
        folder = Path(train_file or eval_file).parent
        task_name = None if columns else (task or _task_from_folder(folder))
        return (Path(train_file) if need_train else None, Path(eval_file) if need_eval else None, task_name)

    path = Path(data).expanduser()
    if not path.exists():
        if _looks_like_hub_name(data):
            return None
        raise DataError(f"--data {data}: no such file or folder")
    if path.is_file():
        if columns is None:
            raise ConfigError(f"--data {data}: a single file needs --text-columns and --label-column")
        evaluation = Path(eval_file) if eval_file else path
        return (path if need_train else None, evaluation if need_eval else None, None)

    task_name, suffixes, eval_stems = None, TABLE_SUFFIXES, EVAL_STEMS
    if columns is None:
        task_name = task or _task_from_folder(path)
        suffixes, eval_stems = (".tsv",), glue_task(task_name).eval_files
    train = Path(train_file) if train_file else _find_file(path, ("train",), suffixes)
    evaluation = Path(eval_file) if eval_file else _find_file(path, eval_stems, suffixes)
    if need_train and train is None:
        raise DataError(f"--data {data}: no train file; expected train{' or train'.join(suffixes)} in the folder")
    if need_eval and evaluation is None:
        names = " or ".join(f"{stem}{suffixes[0]}" for stem in eval_stems)
        raise DataError(f"--data {data}: no evaluation file; expected {names} in the folder")
    return (train if need_train else None, evaluation if need_eval else None, task_name)


def _find_file(folder: Path, stems: Sequence[str], suffixes: Sequence[str]) -> Path | None:
    for stem in stems:
        for suffix in suffixes:
            if (folder / f"{stem}{suffix}").is_file():
                return folder / f"{stem}{suffix}"
    return None


def _task_from_folder(folder: Path) -> str:
    key = normalise_task_name(folder.resolve().name)
    if key not in GLUE_TASKS:
        raise ConfigError(
            f"cannot tell the task from folder name {folder.name!r}: pass --task (one of "
            f"{', '.join(GLUE_TASKS)}), or --text-columns and --label-column for your own data"
        )
    return key


def _looks_like_hub_name(data: str) -> bool:
    return not data.startswith((".", "/", "~")) and data.count("/") <= 1 and Path(data).suffix == ""
