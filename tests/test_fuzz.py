"""Property-based checks: random bytes, random table shapes and random flag values never give a
traceback, and a file that loads always has exactly the classes it holds."""

from __future__ import annotations

import csv
import io
import json
import math
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prunekit.cli import build_parser, main
from prunekit.data import load_task_data
from prunekit.errors import DataError, PrunekitError

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SUFFIXES = (".csv", ".tsv", ".jsonl")


def _load(content: bytes, suffix: str, **kwargs):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"train{suffix}"
        path.write_bytes(content)
        return load_task_data(str(path), **kwargs)


@FUZZ
@given(content=st.binary(max_size=300), suffix=st.sampled_from(SUFFIXES), header=st.booleans())
def test_random_bytes_are_read_or_refused_cleanly(content, suffix, header):
    columns = dict(text_columns="text", label_column="label") if header else {}
    if not header:
        columns = dict(text_columns="0", label_column="1", no_header=True)
    try:
        data = _load(content, suffix, **columns)
    except PrunekitError:
        return
    assert len(data.train) >= 1 and data.task.num_labels >= 1


LABELS = st.sampled_from(["0", "1", "2", "1.0", " 1", "pos", "neg", "0.5", "", "nan", "inf", "-Infinity", "N/A"])
TEXTS = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)


def _bad_label(label: str) -> bool:
    text = label.strip()
    if not text:
        return True
    try:
        return not math.isfinite(float(text))
    except ValueError:
        return False


def _classes(labels: list[str]) -> int:
    """The number of classes the labels name (1 for regression), computed independently of prunekit."""
    values = [label.strip() for label in labels]
    try:
        numbers = [float(v) for v in values]
    except ValueError:
        return len(set(values))
    if all(n.is_integer() for n in numbers):
        return len({int(n) for n in numbers})
    return 1


def _regression(labels: list[str]) -> bool:
    """Numbers that are not all integers: a regression target."""
    try:
        numbers = [float(label.strip()) for label in labels]
    except ValueError:
        return False
    return not all(n.is_integer() for n in numbers)


@FUZZ
@given(
    rows=st.lists(st.tuples(TEXTS, LABELS, st.integers(min_value=-1, max_value=1)), min_size=1, max_size=8),
    suffix=st.sampled_from(SUFFIXES),
)
def test_random_tables_load_with_the_right_class_count_or_fail_naming_the_line(rows, suffix):
    """``extra`` -1 drops the label field, +1 adds a field: both are malformed rows."""
    buffer = io.StringIO()
    if suffix == ".jsonl":
        for text, label, extra in rows:
            record = {"text": text} | ({} if extra < 0 else {"label": label}) | ({"more": 1} if extra > 0 else {})
            buffer.write(json.dumps(record) + "\n")
    elif suffix == ".csv":
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["text", "label"])
        for text, label, extra in rows:
            writer.writerow([text] + ([] if extra < 0 else [label]) + (["x"] if extra > 0 else []))
    else:  # TSV has no quoting: texts hold no tabs or line breaks; a row that comes out empty is a blank line
        rows = [(" ".join(t.split()), y, e) for t, y, e in rows]
        lines = [
            "\t".join([text] + ([] if extra < 0 else [label]) + (["x"] if extra > 0 else []))
            for text, label, extra in rows
        ]
        rows = [row for row, line in zip(rows, lines) if line]
        buffer.write("text\tlabel\n" + "".join(f"{line}\n" for line in lines))
    # a CSV record over several lines is refused: prunekit cannot tell it from a stray quote merging rows
    multiline = suffix == ".csv" and any("\n" in text or "\r" in text for text, _, _ in rows)
    malformed = multiline or any(
        (extra != 0 and not (extra > 0 and suffix == ".jsonl")) or _bad_label(label) for _, label, extra in rows
    )
    labels = [label for _, label, _ in rows]
    one_class = bool(rows) and not _regression(labels) and _classes(labels) == 1  # refused: nothing to classify
    try:
        data = _load(buffer.getvalue().encode(), suffix, text_columns="text", label_column="label")
    except DataError as err:
        assert malformed or not rows or one_class, str(err)
        assert "train" in str(err)
        return
    assert not malformed and not one_class
    assert data.task.num_labels == _classes(labels)


FLAG_RANGES = {
    ("finetune", "--lr"): lambda v: v > 0,
    ("finetune", "--epochs"): lambda v: v > 0,
    ("finetune", "--weight-decay"): lambda v: v >= 0,
    ("finetune", "--warmup-ratio"): lambda v: 0 <= v < 1,
    ("finetune", "--seed"): lambda v: 0 <= v < 2**32,
    ("finetune", "--sparsity"): lambda v: 0 <= v < 1,
    ("finetune", "--alpha-kd"): lambda v: v >= 0,
    ("distill", "--temperature"): lambda v: v > 0,
    ("lottery", "--tolerance"): lambda v: v >= 0,
    ("lottery", "--prune-per-round"): lambda v: 0 < v < 1,
    ("prune structured", "--heads"): lambda v: 0 < v <= 1,
    ("bench", "--warmup"): lambda v: v >= 0,
}
REQUIRED = {
    "finetune": ["--out", "x"],
    "distill": ["--teacher", "t", "--student-layers", "1", "--out", "x"],
    "lottery": ["--out", "x"],
    "prune structured": ["--model", "m", "--out", "x"],
    "bench": ["--model", "m"],
}
AUTO_FLAGS = {("finetune", "--epochs"), ("finetune", "--warmup-ratio")}
VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(2**40), max_value=2**40).map(str),
    st.text(max_size=6),
)


@FUZZ
@given(flag=st.sampled_from(sorted(FLAG_RANGES)), value=VALUES)
def test_random_flag_values_parse_into_range_or_exit_2(flag, value, capsys):
    command, name = flag
    argv = [*command.split(), *REQUIRED[command], f"{name}={value}"]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:
        assert stop.code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err
        return
    parsed = getattr(args, name[2:].replace("-", "_"))
    if parsed == "auto":  # the training flags that choose their value from the data size
        assert flag in AUTO_FLAGS and value == "auto"
        return
    assert math.isfinite(parsed) and FLAG_RANGES[flag](parsed)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e999", "0x10", "", "1_0"])
def test_odd_numbers_through_main_never_raise(value, tmp_path, capsys):
    code = main(["finetune", "--model", str(tmp_path / "none"), "--out", str(tmp_path / "o"), f"--lr={value}"])
    assert code == 2 and "Traceback" not in capsys.readouterr().err


# ---------------------------------------------------------------- recipes


def _recipe_values():
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(-(10**12), 10**12)
        | st.floats(allow_nan=True, allow_infinity=True)
        | st.text(max_size=12)
        | st.sampled_from(["@input", "@finetune", "@nope", "auto", "onnx", "hf", "control", "parent", "2:4"])
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
        max_leaves=8,
    )


def _stage_entries():
    from prunekit.recipes.recipe import STAGE_KEYS
    from prunekit.recipes.schema import METHODS

    keys = sorted({key for method in METHODS.values() for key in method.options} | set(STAGE_KEYS))
    return st.dictionaries(
        st.sampled_from(keys) | st.text(max_size=8),
        _recipe_values() | st.sampled_from(list(METHODS)) | st.sampled_from(["finetune", "a", "b"]),
        max_size=6,
    )


def _read(text: str, overrides=()):
    from prunekit.recipes.recipe import read_recipe

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "recipe.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            return read_recipe(str(path), list(overrides))
        except PrunekitError as err:
            assert "\n" not in str(err) and str(err).startswith(("--set", str(path))), str(err)
            return None


@FUZZ
@given(
    stages=st.lists(_stage_entries(), max_size=4) | _recipe_values(),
    defaults=st.none()
    | st.dictionaries(st.sampled_from(["seed", "lr", "sparsity", "max_steps", "x"]), _recipe_values()),
    extra=st.dictionaries(st.text(max_size=6), _recipe_values(), max_size=2),
)
def test_random_recipe_structures_validate_or_fail_in_one_line(stages, defaults, extra):
    import yaml

    raw = {**extra, "stages": stages, **({"defaults": defaults} if defaults is not None else {})}
    recipe = _read(yaml.safe_dump(raw))
    if recipe is not None:  # whatever passes validation turns into command lines without surprises
        from prunekit.recipes.recipe import parse_recipe

        assert parse_recipe(yaml.safe_load(recipe.dump()), "again").as_dict() == recipe.as_dict()


@FUZZ
@given(content=st.binary(max_size=200))
def test_random_bytes_as_a_recipe_fail_in_one_line(content):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "recipe.yaml"
        path.write_bytes(content)
        from prunekit.recipes.recipe import read_recipe

        try:
            read_recipe(str(path))
        except PrunekitError as err:
            assert "\n" not in str(err)


@FUZZ
@given(override=st.text(max_size=30) | st.from_regex(r"stages\[[0-9]{1,2}\]\.[a-z_]{1,12}=.{0,8}", fullmatch=True))
def test_random_set_overrides_apply_or_fail_in_one_line(override):
    from prunekit.recipes.recipe import builtin_recipes

    _read(builtin_recipes()["structured"].read_text(), [override])


def _alias_chain(depth: int, fanout: int) -> str:
    """A YAML flow value whose anchors each repeat the one before ``fanout`` times: fanout ** depth values
    once expanded, a few hundred bytes on disk."""
    value = "&a0 [x]"
    for level in range(1, depth + 1):
        value = f"&a{level} [{value}" + f", *a{level - 1}" * (fanout - 1) + "]"
    return value


HUGE_SCALARS = st.sampled_from(["1" * 5000, "9" * 4301, "x" * 20_000, "[" * 3000 + "]" * 3000, "1e999", "-.inf"])


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    depth=st.integers(0, 12),
    fanout=st.integers(1, 12),
    where=st.sampled_from(["lr", "method", "name", "from", "defaults", "description", "stages", "extra"]),
    count=st.integers(1, 12) | st.sampled_from([999, 1000, 1001, 3000]),
    scalar=HUGE_SCALARS | st.text(max_size=30).map(json.dumps),
    overrides=st.lists(st.sampled_from(["stages[0].lr=", "defaults.seed=", "description="]), max_size=2),
)
def test_recipes_with_aliases_huge_values_and_many_stages_fail_fast_in_one_line(
    depth, fanout, where, count, scalar, overrides
):
    """Values, YAML aliases and stage counts an attacker (or a typo) can put in a recipe: each one is
    validated or refused in one short line, within seconds, however large it expands."""
    import time

    chain = _alias_chain(depth, fanout)
    stage = "  - {name: s%d, method: finetune}\n"
    body = "".join(stage % index for index in range(count))
    in_stage = where in ("lr", "method", "name", "from")
    first = f"  - {{name: a, method: finetune, {where}: {chain}}}\n" if in_stage else ""
    top = {"defaults": f"defaults: {{seed: {scalar}}}\n", "description": f"description: {chain}\n",
           "stages": "", "extra": f"extra: {chain}\n"}.get(where, "")  # fmt: skip
    text = top + ("stages: " + chain + "\n" if where == "stages" else "stages:\n" + first + body)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "recipe.yaml"
        path.write_text(text, encoding="utf-8")
        from prunekit.recipes.recipe import read_recipe

        try:
            recipe = read_recipe(str(path), [key + (chain if "lr" in key else scalar) for key in overrides])
        except PrunekitError as err:
            message = str(err)
            assert "\n" not in message and len(message) < 1500, message[:300]
        else:
            assert 1 <= len(recipe.stages) <= 1000
    assert time.monotonic() - started < 20
