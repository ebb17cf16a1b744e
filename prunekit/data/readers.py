"""Read a task's train/eval splits from GLUE folders, CSV/TSV/JSONL files, or the hub.

Everything here is plain Python: texts and labels, no tokenisation.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from prunekit.data.sources import TABLE_SUFFIXES, is_text_corpus, locate_splits
from prunekit.data.tasks import Column, TaskSpec, custom_task, glue_task, normalise_task_name
from prunekit.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

csv.field_size_limit(sys.maxsize)


@dataclass
class Split:
    """One split: texts (one or two per example) and their labels (class ids or floats)."""

    text_a: list[str]
    text_b: list[str] | None
    labels: list[int] | list[float]
    source: str

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: Sequence[int]) -> Split:
        def pick(values: list) -> list:
            return [values[i] for i in indices]

        text_b = None if self.text_b is None else pick(self.text_b)
        return replace(self, text_a=pick(self.text_a), text_b=text_b, labels=pick(self.labels))


@dataclass
class TaskData:
    """A task and the splits that were asked for (``None`` for a split not loaded)."""

    task: TaskSpec
    train: Split | None
    eval: Split | None


@dataclass
class _RawSplit:
    """Texts with labels still as text, and where each came from (for error messages)."""

    texts: list[list[str]]
    labels: list[str]
    lines: list[int]
    source: str


# ---------------------------------------------------------------- reading files


def decode_file(path: Path, encoding: str) -> str:
    """The file's text; a clear error for an unknown encoding or bytes that are not in it."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror})") from None
    codec = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding  # MRPC has a BOM
    try:
        return raw.decode(codec)
    except LookupError:
        raise ConfigError(f"--encoding {encoding}: unknown text encoding; e.g. utf-8 or latin-1") from None
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(
            f"{path}:{line}: not valid {encoding} text (byte 0x{raw[err.start]:02x}); "
            "pass --encoding with the file's encoding, e.g. --encoding latin-1"
        ) from None


def _read_rows(path: Path, has_header: bool, encoding: str) -> tuple[list[str] | None, list[tuple[int, Any]]]:
    """Header (or None) and ``(line, row)`` pairs: rows are field lists (CSV/TSV) or dicts (JSONL).

    A CSV record that spans several lines (a quote opened in one row and closed in a later one) comes
    back as a ``_Spanning`` row, so the caller reports it instead of silently merging rows.
    """
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise DataError(f"{path}: unsupported file type {suffix!r}; expected one of {', '.join(TABLE_SUFFIXES)}")
    text = decode_file(path, encoding)
    if suffix in (".jsonl", ".json"):
        rows = []
        for line, record_text in enumerate(text.splitlines(), start=1):
            if not record_text.strip():
                continue
            try:
                record = json.loads(record_text)
            except (json.JSONDecodeError, RecursionError) as err:
                reason = getattr(err, "msg", "nested too deeply")
                raise DataError(f"{path}:{line}: expected one JSON object per line ({reason})") from None
            if not isinstance(record, dict):
                raise DataError(f"{path}:{line}: expected a JSON object, found {type(record).__name__}")
            rows.append((line, record))
        return (list(rows[0][1]) if rows else []), rows
    # GLUE's TSVs hold unbalanced quote characters: quotes are never field delimiters there.
    quoting = csv.QUOTE_NONE if suffix == ".tsv" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t" if suffix == ".tsv" else ",", quoting=quoting)
    records, last = [], 0
    try:
        for fields in reader:
            first, last = last + 1, reader.line_num
            if fields:
                records.append((first, fields if last == first else _Spanning(first, last)))
    except csv.Error as err:
        raise DataError(f"{path}:{reader.line_num}: malformed {suffix[1:].upper()} ({err})") from None
    if not has_header:
        return None, records
    if not records:
        raise DataError(f"{path}: file is empty; expected a header line and examples")
    if isinstance(records[0][1], _Spanning):
        raise DataError(f"{path}:1: the header spans several lines (an unclosed quote)")
    return records[0][1], records[1:]


@dataclass
class _Spanning:
    """A CSV record whose quoted field runs over several physical lines."""

    first: int
    last: int


def _column_key(path: Path, header: list[str] | None, jsonl: bool, column: Column) -> Column:
    """The key that indexes a row for a column given by name or 0-based index."""
    if header is None:
        if isinstance(column, str) and not column.isdigit():
            raise ConfigError(f"{path}: column {column!r} named, but the file has no header; give 0-based indices")
        return int(column)
    if column in header:
        return column if jsonl else header.index(column)
    if not jsonl and str(column).isdigit() and int(column) < len(header):
        return int(column)
    raise DataError(f"{path}: column {column!r} not found; columns are: {', '.join(map(str, header))}")


def _row_problem(row: Any, keys: list[Column], width: int | None, width_from: str) -> str | None:
    """Why a row cannot be read as an example (None if it can)."""
    if isinstance(row, _Spanning):
        return f"a quoted field runs on to line {row.last} (a stray quote character? texts with line breaks need JSONL)"
    if width is not None and len(row) != width:
        return f"{len(row)} fields, the file's {width_from} has {width}"
    try:
        fields = [row[k] for k in keys]
    except (IndexError, KeyError) as err:
        return f"no column {err.args[0]!r}"
    if any(isinstance(v, (dict, list)) for v in fields):
        return "a column holds a JSON object or list; expected text and a scalar label"
    label = _label_text(fields[-1])
    if label == "":
        return "empty label"
    if _is_float(label) and not math.isfinite(float(label)):
        return f"label {label!r} is not a finite number"
    return None


def _read_split(path: Path, spec: TaskSpec, encoding: str, skip_bad_rows: bool) -> _RawSplit:
    """Texts and raw labels of one file; a malformed row is an error, or skipped and counted."""
    header, rows = _read_rows(path, spec.has_header, encoding)
    jsonl = path.suffix.lower() in (".jsonl", ".json")
    columns = (*spec.text_columns, spec.label_column)
    keys = [_column_key(path, header, jsonl, c) for c in columns] if rows else []
    width = None
    if not jsonl:
        width = len(header) if header is not None else next((len(r) for _, r in rows if isinstance(r, list)), None)
    raw = _RawSplit([[] for _ in spec.text_columns], [], [], str(path))
    skipped: list[str] = []
    for line, row in rows:
        problem = _row_problem(row, keys, width, "header" if header is not None else "first row")
        if problem is not None:
            if not skip_bad_rows:
                raise DataError(f"{path}:{line}: {problem} (pass --skip-bad-rows to skip such rows)")
            skipped.append(f"line {line}: {problem}")
            continue
        fields = [row[k] for k in keys]
        for bucket, value in zip(raw.texts, fields[:-1]):
            bucket.append("" if value is None else str(value))
        raw.labels.append(_label_text(fields[-1]))
        raw.lines.append(line)
    if skipped:
        logger.warning("%s: skipped %d malformed row(s); first: %s", path, len(skipped), skipped[0])
    if not raw.labels:
        raise DataError(f"{path}: no examples; expected at least one labelled row")
    return raw


def _label_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


# ---------------------------------------------------------------- labels


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def infer_label_names(raw_labels: Sequence[str], regression: bool | None = None) -> tuple[str, ...] | None:
    """``None`` (regression) for float labels that are not all integers, else the sorted class names."""
    numeric = all(_is_float(v) for v in raw_labels)
    integral = numeric and all(float(v).is_integer() for v in raw_labels)
    if regression is None:
        regression = numeric and not integral
    if regression:
        return None
    if integral:
        return tuple(str(v) for v in sorted({int(float(v)) for v in raw_labels}))
    return tuple(sorted(set(raw_labels)))


def _to_split(raw: _RawSplit, spec: TaskSpec) -> Split:
    """Parse raw labels: floats for regression, class ids for classification."""
    labels: list[Any] = []
    if spec.is_regression:
        for line, value in zip(raw.lines, raw.labels):
            if not _is_float(value):
                raise DataError(
                    f"{raw.source}:{line}: label {spec.label_column!r} = {value!r} is not a number "
                    "(a regression task expects float labels)"
                )
            labels.append(float(value))
    else:
        ids = {name: i for i, name in enumerate(spec.label_names)}
        for line, value in zip(raw.lines, raw.labels):
            if value not in ids and _is_float(value) and float(value).is_integer():
                value = str(int(float(value)))  # "1.0" is class "1"
            if value not in ids:
                raise DataError(
                    f"{raw.source}:{line}: label {value!r} in column {spec.label_column!r} is not one of "
                    f"{', '.join(spec.label_names)}"
                )
            labels.append(ids[value])
    return Split(raw.texts[0], raw.texts[1] if len(raw.texts) > 1 else None, labels, raw.source)


# ---------------------------------------------------------------- entry point


def parse_columns(text: str | Sequence[str] | None, flag: str = "--text-columns") -> tuple[Column, ...] | None:
    """``"a,b"`` or ``["a", "b"]`` -> ``("a", "b")``; digit strings become indices."""
    if text is None:
        return None
    parts = [p.strip() for p in (text.split(",") if isinstance(text, str) else text)]
    if not parts or any(not p for p in parts) or len(parts) > 2:
        raise ConfigError(f"{flag} {text!r}: expected one or two comma-separated column names or indices")
    return tuple(int(p) if p.isdigit() else p for p in parts)


def load_task_data(
    data: str | None = None,
    *,
    task: str | None = None,
    train_file: str | None = None,
    eval_file: str | None = None,
    text_columns: str | Sequence[str] | None = None,
    label_column: str | None = None,
    no_header: bool = False,
    regression: bool | None = None,
    label_names: Sequence[str] | None = None,
    need_train: bool = True,
    need_eval: bool = True,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    seed: int = 42,
    encoding: str = "utf-8",
    skip_bad_rows: bool = False,
) -> TaskData:
    """Load a task's splits.

    ``data`` is a GLUE task folder (``SST-2``), a CSV/TSV/JSONL file or a folder of them, or a hub
    dataset name (``glue/sst2``; needs the ``datasets`` package and a network). ``train_file`` /
    ``eval_file`` name the splits explicitly. Your own files need ``text_columns`` and
    ``label_column``. ``label_names`` fixes the class order (e.g. a fine-tuned model's ``id2label``).
    ``max_train_samples`` draws a seeded random subset; ``max_eval_samples`` keeps the first rows.
    A malformed row (field count unlike the header's, an empty or non-finite label, a quote that
    swallows line breaks) stops with ``file:line``, or is skipped and counted with ``skip_bad_rows``.

    >>> data = load_task_data("../shared/data/glue/SST-2", need_train=False)  # doctest: +SKIP
    >>> data.task.main_metric, len(data.eval)  # doctest: +SKIP
    ('accuracy', 872)
    """
    if text_columns is None and is_text_corpus(data, train_file, eval_file):
        raise ConfigError(
            f"--data {data or train_file or eval_file}: a plain-text corpus (language modelling); this command "
            "takes labelled data (GLUE folder, CSV/TSV/JSONL) — evaluate, finetune and prune take text"
        )
    columns = parse_columns(text_columns)
    if columns is not None and label_column is None:
        raise ConfigError("--text-columns given without --label-column; name the column that holds the labels")
    if no_header and columns is None:
        raise ConfigError("--no-header needs --text-columns and --label-column as 0-based column indices")
    if max_train_samples is not None and max_train_samples < 1:
        raise ConfigError(f"--max-train-samples {max_train_samples}: expected a positive number")
    if max_eval_samples is not None and max_eval_samples < 1:
        raise ConfigError(f"--max-eval-samples {max_eval_samples}: expected a positive number")

    located = locate_splits(data, task, train_file, eval_file, need_train, need_eval, columns)
    if located is None:
        spec, raw = _read_hub(data, task, columns, label_column, need_train, need_eval)
    else:
        train_path, eval_path, task_name = located
        if columns is None:
            spec = glue_task(task_name)
        else:
            label_key: Column = int(label_column) if no_header and str(label_column).isdigit() else label_column
            spec = custom_task(columns, label_key, None, has_header=not no_header)
        raw = {
            name: _read_split(path, spec, encoding, skip_bad_rows)
            for name, path in (("train", train_path), ("eval", eval_path))
            if path is not None
        }
    if spec.name == "custom":
        if label_names is not None and not regression:
            names = tuple(label_names)
        else:
            source = raw.get("train") or raw["eval"]
            names = infer_label_names(source.labels, regression)
            if names is not None and len(names) < 2:
                raise DataError(
                    f"{source.source}: every label in column {label_column!r} is {names[0]!r}; classification "
                    "needs at least two classes (pass --regression for a numeric target)"
                )
        spec = custom_task(spec.text_columns, spec.label_column, names, has_header=spec.has_header)

    train = _to_split(raw["train"], spec) if "train" in raw else None
    evaluation = _to_split(raw["eval"], spec) if "eval" in raw else None
    if train is not None and max_train_samples is not None and max_train_samples < len(train):
        train = train.subset(sorted(random.Random(seed).sample(range(len(train)), max_train_samples)))
    if evaluation is not None and max_eval_samples is not None:
        evaluation = evaluation.subset(range(min(max_eval_samples, len(evaluation))))
    return TaskData(spec, train, evaluation)


# The hub's GLUE configs name their columns differently from the TSV headers.
_HUB_GLUE_COLUMNS = {
    "sst2": ("sentence",),
    "cola": ("sentence",),
    "mrpc": ("sentence1", "sentence2"),
    "stsb": ("sentence1", "sentence2"),
    "rte": ("sentence1", "sentence2"),
    "wnli": ("sentence1", "sentence2"),
    "qnli": ("question", "sentence"),
    "qqp": ("question1", "question2"),
    "mnli": ("premise", "hypothesis"),
}


def _read_hub(
    name: str,
    task: str | None,
    columns: tuple[Column, ...] | None,
    label_column: str | None,
    need_train: bool,
    need_eval: bool,
) -> tuple[TaskSpec, dict[str, _RawSplit]]:
    """Read ``name`` with the ``datasets`` package (needs a network; no test or benchmark uses this)."""
    try:
        import datasets
    except ImportError:
        raise DataError(
            f"--data {name}: no such file or folder; to load it from the Hugging Face hub, pip install datasets"
        ) from None
    parts = name.split("/")
    try:
        dataset = datasets.load_dataset(*parts)
    except Exception as err:  # the hub raises many types; its message is what matters
        raise DataError(f"--data {name}: could not load it from the hub ({err})") from None
    glue_name = normalise_task_name(task or parts[-1])
    if columns is None:
        if parts[0] != "glue" or glue_name not in _HUB_GLUE_COLUMNS:
            raise ConfigError(f"--data {name}: pass --text-columns and --label-column for this hub dataset")
        spec = glue_task(glue_name)
        columns, label_column = _HUB_GLUE_COLUMNS[glue_name], "label"
    else:
        spec = custom_task(columns, label_column, None)
    wanted = {
        "train": ["train"] if need_train else [],
        "eval": [s for s in ("validation_matched", "validation") if s in dataset][:1] if need_eval else [],
    }
    raw = {}
    for role, split_names in wanted.items():
        for split_name in split_names:
            table = dataset[split_name]
            labels = list(table[label_column])
            if spec.label_names is not None:  # hub GLUE labels are already class ids
                labels = [spec.label_names[i] for i in labels]
            raw[role] = _RawSplit(
                [list(map(str, table[c])) for c in columns],
                [_label_text(v) for v in labels],
                list(range(len(labels))),
                f"{name}[{split_name}]",
            )
    return spec, raw
