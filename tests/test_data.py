"""Loaders for every supported layout, and every bad input the loaders must reject clearly."""

from __future__ import annotations

import json

import pytest

from prunekit.data import load_task_data
from prunekit.errors import ConfigError, DataError
from tests.conftest import glue_dir


def write(path, text, bom=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\ufeff" if bom else "").encode() + text.encode("utf-8"))
    return path


# ---------------------------------------------------------------- GLUE layouts (synthetic copies)


def test_sst2_layout_with_quotes_inside_sentences(tmp_path):
    """QUOTE_NONE: an unbalanced quote must not swallow the following lines."""
    folder = tmp_path / "SST-2"
    body = "sentence\tlabel\nit 's a \"great film\t1\nbad movie\t0\n"
    write(folder / "train.tsv", body)
    write(folder / "dev.tsv", body)
    data = load_task_data(str(folder))
    assert data.task.name == "sst2" and data.task.main_metric == "accuracy"
    assert data.train.text_a == ["it 's a \"great film", "bad movie"]
    assert data.train.labels == [1, 0] and data.train.text_b is None


def test_mrpc_layout_with_bom_and_sentence_pairs(tmp_path):
    """MRPC ships with a UTF-8 BOM before its header: the first column must still be 'Quality'."""
    folder = tmp_path / "MRPC"
    body = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tHe said so.\tHe told us.\n0\t3\t4\tA b.\tC d.\n"
    write(folder / "train.tsv", body, bom=True)
    write(folder / "dev.tsv", body, bom=True)
    data = load_task_data(str(folder))
    assert data.task.metrics == ("f1", "accuracy")
    assert data.eval.text_a == ["He said so.", "A b."] and data.eval.text_b == ["He told us.", "C d."]
    assert data.eval.labels == [1, 0]


def test_cola_headerless_layout(tmp_path):
    folder = tmp_path / "CoLA"
    body = "gj04\t1\t\tThe sailors rode the breeze clear of the rocks.\ngj04\t0\t*\tThe more we study verbs.\n"
    write(folder / "train.tsv", body)
    write(folder / "dev.tsv", body)
    data = load_task_data(str(folder))
    assert data.task.main_metric == "matthews_correlation"
    assert data.train.labels == [1, 0] and data.train.text_a[1] == "The more we study verbs."


def test_stsb_regression_and_rte_string_labels(tmp_path):
    sts = tmp_path / "STS-B"
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    body = (
        header + "0\tmain\tf\t2012\t1\tnone\tnone\tA plane.\tAn air plane.\t5.000\n"
        "1\tmain\tf\t2012\t4\tnone\tnone\tA man.\tA cat.\t0.600\n"
    )
    write(sts / "train.tsv", body)
    write(sts / "dev.tsv", body)
    data = load_task_data(str(sts))
    assert data.task.is_regression and data.train.labels == [5.0, 0.6]

    rte = tmp_path / "RTE"
    body = "index\tsentence1\tsentence2\tlabel\n0\tA b.\tC d.\tnot_entailment\n1\tE f.\tG h.\tentailment\n"
    write(rte / "train.tsv", body)
    write(rte / "dev.tsv", body)
    data = load_task_data(str(rte))
    assert data.task.label_names == ("entailment", "not_entailment")
    assert data.train.labels == [1, 0]


def test_mnli_uses_dev_matched(tmp_path):
    folder = tmp_path / "MNLI"
    header = "index\tpromptID\tpairID\tgenre\ts1b\ts2b\ts1p\ts2p\tsentence1\tsentence2\tlabel1\tgold_label\n"
    row = "0\t1\t2\tg\tx\tx\tx\tx\tA b.\tC d.\tneutral\tneutral\n"
    write(folder / "train.tsv", header + row)
    write(folder / "dev_matched.tsv", header + row.replace("neutral", "contradiction"))
    data = load_task_data(str(folder))
    assert data.eval.labels == [2] and data.eval.source.endswith("dev_matched.tsv")


def test_task_flag_overrides_folder_name_and_explicit_split_files(tmp_path):
    body = "sentence\tlabel\ngood\t1\nbad\t0\n"
    train = write(tmp_path / "mine" / "a.tsv", body)
    dev = write(tmp_path / "mine" / "b.tsv", body)
    data = load_task_data(train_file=str(train), eval_file=str(dev), task="SST-2")
    assert data.task.name == "sst2" and len(data.train) == 2 and len(data.eval) == 2


def test_glue_malformed_line_stops_or_is_skipped_with_a_count(tmp_path, caplog):
    folder = tmp_path / "SST-2"
    write(folder / "train.tsv", "sentence\tlabel\ngood\t1\nbroken line\nbad\t0\n")
    write(folder / "dev.tsv", "sentence\tlabel\ngood\t1\n")
    with pytest.raises(DataError, match=r"train.tsv:3: 1 fields, the file's header has 2"):
        load_task_data(str(folder))
    data = load_task_data(str(folder), skip_bad_rows=True)
    assert data.train.labels == [1, 0]
    assert "skipped 1 malformed" in caplog.text


# ---------------------------------------------------------------- custom files


def test_csv_with_string_labels_maps_sorted_ids(tmp_path):
    path = write(tmp_path / "reviews.csv", 'text,stars\n"Great, really",pos\nmeh,neutral\nawful,neg\n')
    data = load_task_data(str(path), text_columns="text", label_column="stars")
    assert data.task.name == "custom" and data.task.label_names == ("neg", "neutral", "pos")
    assert data.train.text_a[0] == "Great, really" and data.train.labels == [2, 1, 0]
    assert data.task.metrics == ("accuracy", "macro_f1")


def test_jsonl_pairs_and_regression_detected(tmp_path):
    rows = [{"q": "a", "p": "b", "y": 0.5}, {"q": "c", "p": "d", "y": 3}]
    path = write(tmp_path / "pairs.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    data = load_task_data(str(path), text_columns="q,p", label_column="y")
    assert data.task.is_regression and data.task.main_metric == "pearson"
    assert data.train.text_b == ["b", "d"] and data.train.labels == [0.5, 3.0]


def test_integer_labels_stay_classification_and_regression_flag_forces_it(tmp_path):
    path = write(tmp_path / "d.tsv", "t\ty\nx\t2\ny\t10\n")
    data = load_task_data(str(path), text_columns="t", label_column="y")
    assert data.task.label_names == ("2", "10") and data.train.labels == [0, 1]
    forced = load_task_data(str(path), text_columns="t", label_column="y", regression=True)
    assert forced.task.is_regression and forced.train.labels == [2.0, 10.0]


def test_headerless_file_with_column_indices(tmp_path):
    path = write(tmp_path / "d.csv", "x,good,1\ny,bad,0\n")
    data = load_task_data(str(path), text_columns="1", label_column="2", no_header=True)
    assert data.train.text_a == ["good", "bad"] and data.task.label_names == ("0", "1")


def test_folder_of_custom_files_and_label_names_fix_order(tmp_path):
    write(tmp_path / "d" / "train.csv", "t,y\na,cat\nb,dog\n")
    write(tmp_path / "d" / "validation.csv", "t,y\nc,dog\n")
    data = load_task_data(str(tmp_path / "d"), text_columns="t", label_column="y", label_names=["dog", "cat"])
    assert data.train.labels == [1, 0] and data.eval.labels == [0]


def test_sample_limits_are_seeded_subsets(tmp_path):
    lines = "".join(f"s{i}\t{i % 2}\n" for i in range(50))
    write(tmp_path / "SST-2" / "train.tsv", "sentence\tlabel\n" + lines)
    write(tmp_path / "SST-2" / "dev.tsv", "sentence\tlabel\n" + lines)
    a = load_task_data(str(tmp_path / "SST-2"), max_train_samples=10, max_eval_samples=5, seed=1)
    b = load_task_data(str(tmp_path / "SST-2"), max_train_samples=10, max_eval_samples=5, seed=1)
    assert len(a.train) == 10 and a.train.text_a == b.train.text_a
    assert a.eval.text_a == [f"s{i}" for i in range(5)]


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "setup, kwargs, error, message",
    [
        (None, dict(data="nowhere/SST-2"), DataError, "no such file or folder"),
        ("SST-2/train.tsv:sentence\tlabel\n", dict(data="SST-2"), DataError, "no evaluation file"),
        (
            "SST-2/train.tsv:sentence\tlabel\n|SST-2/dev.tsv:sentence\tlabel\na\t1\n",
            dict(data="SST-2"),
            DataError,
            "no examples",
        ),
        ("X/train.tsv:a\n|X/dev.tsv:a\n", dict(data="X"), ConfigError, "cannot tell the task"),
        ("X/train.tsv:a\n|X/dev.tsv:a\n", dict(data="X", task="sst5"), ConfigError, "unknown task"),
        (
            "d.csv:t,y\na,1\n",
            dict(data="d.csv", text_columns="text", label_column="y"),
            DataError,
            "column 'text' not found",
        ),
        ("d.csv:t,y\na,1\n", dict(data="d.csv", text_columns="t"), ConfigError, "--label-column"),
        (
            "d.csv:t,y\na,1.5\nb,high\n",
            dict(data="d.csv", text_columns="t", label_column="y", regression=True),
            DataError,
            "'high' is not a number",
        ),
        ("d.csv:t,y\na,1\nb\n", dict(data="d.csv", text_columns="t", label_column="y"), DataError, "d.csv:3"),
        (
            "d.jsonl:[1, 2]\n",
            dict(data="d.jsonl", text_columns="t", label_column="y"),
            DataError,
            "expected a JSON object",
        ),
        ("d.csv:t,y\n", dict(data="d.csv", text_columns="t", label_column="y"), DataError, "no examples"),
        (
            "SST-2/train.tsv:sentence\tlabel\na\t7\n|SST-2/dev.tsv:sentence\tlabel\na\t1\n",
            dict(data="SST-2"),
            DataError,
            "label '7'",
        ),
        ("d.txt:x\n", dict(data="d.txt", text_columns="t", label_column="y"), DataError, "unsupported file type"),
    ],
)
def test_bad_input_names_the_file_and_what_was_expected(tmp_path, monkeypatch, setup, kwargs, error, message):
    """Each bad input raises a PrunekitError whose one-line message names the problem."""
    monkeypatch.chdir(tmp_path)
    for spec in (setup or "").split("|"):
        if spec:
            name, text = spec.split(":", 1)
            write(tmp_path / name, text)
    with pytest.raises(error, match=message) as info:
        load_task_data(**kwargs)
    assert "\n" not in str(info.value)


def test_hub_name_without_datasets_package_says_how_to_get_it(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_datasets(name, *args, **kwargs):
        if name == "datasets":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    with pytest.raises(DataError, match="pip install datasets"):
        load_task_data("glue/sst2")


# ---------------------------------------------------------------- the real GLUE files


@pytest.mark.parametrize(
    "folder, header, pair", [("SST-2", 1, False), ("MRPC", 1, True), ("STS-B", 1, True), ("CoLA", 0, False)]
)
def test_real_glue_files_load_every_line(folder, header, pair):
    """Every line of the shipped files becomes one example (a quoting bug would merge or drop lines)."""
    path = glue_dir(folder)
    data = load_task_data(str(path))
    for split, name in ((data.train, "train.tsv"), (data.eval, "dev.tsv")):
        lines = sum(1 for line in (path / name).open(encoding="utf-8") if line.strip())
        assert len(split) == lines - header
    assert (data.train.text_b is not None) == pair


def test_hub_glue_dataset_maps_columns_and_split_names(monkeypatch):
    """The hub path (for users with a network), exercised with a stand-in `datasets` module."""
    import sys
    import types

    class Table(dict):
        def __len__(self):
            return len(self["label"])

    calls = []

    def load_dataset(*parts):
        calls.append(parts)
        return {
            "train": Table(premise=["p1", "p2"], hypothesis=["h1", "h2"], label=[0, 2]),
            "validation_matched": Table(premise=["p3"], hypothesis=["h3"], label=[1]),
        }

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    data = load_task_data("glue/mnli")
    assert calls == [("glue", "mnli")]
    assert data.task.name == "mnli" and data.train.text_b == ["h1", "h2"]
    assert (
        data.train.labels == [0, 2] and data.eval.labels == [1] and data.eval.source == "glue/mnli[validation_matched]"
    )
