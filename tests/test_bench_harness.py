"""The bench harness: commands cached by recipe hash, one results writer, and every bench script loads."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))  # the bench scripts import their harness as a top-level module
harness = importlib.import_module("harness")


@pytest.fixture
def fake_prunekit(tmp_path, monkeypatch):
    """prunekit commands that only write a summary saying how many commands ran so far."""
    calls = []

    def run(argv, check, stdout=None):
        calls.append(argv)
        flag = "--json" if "--json" in argv else "--out"
        path = Path(argv[argv.index(flag) + 1])
        summary = path if flag == "--json" else path / "summary.json"
        summary.parent.mkdir(parents=True, exist_ok=True)
        summary.write_text(json.dumps({"run": len(calls)}))

    monkeypatch.setattr(harness, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(harness.subprocess, "run", run)
    return calls


def test_a_command_is_run_once_and_its_model_reused(fake_prunekit, tmp_path, monkeypatch):
    first, summary = harness.trained("finetune", "--model", "minilm", "--epochs", "1")
    again, reused = harness.trained("finetune", "--model", "minilm", "--epochs", "1")
    assert (again, reused) == (first, summary) and len(fake_prunekit) == 1
    assert first.parent == tmp_path / "cache" and first.name.startswith("finetune-")
    other, _ = harness.trained("finetune", "--model", "minilm", "--epochs", "2")
    assert other != first and len(fake_prunekit) == 2
    child, _ = harness.trained("prune", "structured", "--model", first, "--heads", "0.5")
    assert child.name.startswith("prune-structured-")  # its key holds the parent's folder: the whole chain
    monkeypatch.chdir(tmp_path)
    spelt_otherwise = Path("cache") / first.name
    assert harness.trained("prune", "structured", "--model", spelt_otherwise, "--heads", "0.5")[0] == child
    assert json.loads((tmp_path / "cache" / f"{child.name}.command.json").read_text())[-1] == "0.5"


def test_measured_results_are_cached_but_timings_are_not(fake_prunekit, tmp_path):
    assert harness.measured("evaluate", "--model", "m") == harness.measured("evaluate", "--model", "m")
    assert len(fake_prunekit) == 1
    path = tmp_path / "bench.json"
    assert harness.prunekit("bench", "--model", "m", "--json", path) == {"run": 2}
    assert harness.prunekit("bench", "--model", "m", "--json", path) == {"run": 3}


def test_results_are_written_with_their_command_as_json_and_markdown(tmp_path, monkeypatch):
    monkeypatch.setattr(harness, "RESULTS", tmp_path)
    monkeypatch.setattr(sys, "argv", [str(BENCH / "adaptive.py"), "--seeds", "1"])
    table = harness.markdown_table(["arm", "accuracy"], [["dense", harness.mean_std([0.5, 0.7])]])
    harness.write_results("demo", {"arms": [1]}, table)
    record = json.loads((tmp_path / "demo.json").read_text())
    assert record == {"benchmark": "demo", "command": "python bench/adaptive.py --seeds 1", "arms": [1]}
    text = (tmp_path / "demo.md").read_text()
    assert text.startswith("Command: `python bench/adaptive.py --seeds 1`\n\n| arm | accuracy |")
    assert "| dense | 0.6000 ± 0.1414 |" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.json", "demo.md"]  # no temporary files left


def test_shown_commands_use_repository_relative_paths():
    words = ["finetune", "--data", harness.SST2, "--out", "/tmp/x/run"]
    assert harness.shown(words, Path("/tmp/x/run")) == "prunekit finetune --data ../shared/data/glue/SST-2 --out DIR"


SCRIPTS = sorted(p.stem for p in BENCH.glob("*.py") if p.stem not in ("harness", "llmcompressor_peer"))


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_bench_script_loads_and_answers_help(name, tmp_path, monkeypatch, capsys):
    """A bench ported onto the harness still imports and parses its flags (its run takes minutes to hours),
    and neither writes anything."""
    monkeypatch.setattr(harness, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(harness, "RESULTS", tmp_path / "results")
    module = importlib.reload(importlib.import_module(name))
    monkeypatch.setattr(sys, "argv", [f"bench/{name}.py", "--help"])
    with pytest.raises(SystemExit) as exit_:
        module.main()
    assert exit_.value.code == 0 and "usage:" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []
