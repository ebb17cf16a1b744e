"""A recipe stage with ``isolated: true`` runs in a worker process (its config as JSON, its result as
JSON): the same weights as in process, its errors as the same exceptions, and a worker the kernel kills
stops the run with one line while the finished stages stay."""

from __future__ import annotations

import json
import subprocess

import pytest
import safetensors.torch

import prunekit
from prunekit.errors import ConfigError, PrunekitError
from prunekit.stages import worker
from tests.worker_stages import _register

PRUNE = {"method": "prune-magnitude", "importance": "wanda", "sparsity": 0.5, "max_length": 16}


def _weights(folder):
    return safetensors.torch.load_file(str(folder / "model.safetensors"))


@pytest.fixture
def started(monkeypatch):
    """The worker processes started while the test runs (their command lines)."""
    calls, real = [], subprocess.Popen

    def popen(args, *rest, **kwargs):
        if "prunekit.stages.worker" in args:  # not platform's `uname -p` and the like
            calls.append(list(args))
        return real(args, *rest, **kwargs)

    monkeypatch.setattr(worker.subprocess, "Popen", popen)
    return calls


def test_an_isolated_stage_runs_in_a_worker_and_makes_the_same_weights(tiny_bert, sentiment_dir, tmp_path, started):
    stages = [{"name": "ft", "method": "finetune", "max_steps": 3, "batch_size": 8, "max_length": 16},
              {"name": "prune", **PRUNE}]  # fmt: skip
    here = prunekit.run({"stages": stages}, model=str(tiny_bert), data=str(sentiment_dir), out=tmp_path / "here")
    assert not started
    stages[1]["isolated"] = True
    apart = prunekit.run({"stages": stages}, model=str(tiny_bert), data=str(sentiment_dir), out=tmp_path / "apart")
    assert len(started) == 1 and started[0][1:3] == ["-m", "prunekit.stages.worker"]
    for name in ("01-ft", "02-prune"):
        a, b = _weights(tmp_path / "here" / name), _weights(tmp_path / "apart" / name)
        assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    assert [row["metric"] for row in here.stages] == [row["metric"] for row in apart.stages]
    record = json.loads((tmp_path / "apart" / "02-prune" / "stage.json").read_text())
    assert record["stage"]["isolated"] is True
    assert "prune" in (tmp_path / "apart" / "02-prune" / "log.txt").read_text()  # the worker's output, logged


def test_a_worker_error_comes_back_as_the_same_exception_naming_the_stage(tiny_bert, sentiment_dir, tmp_path):
    from prunekit.stages import STAGES, StageInputs

    inputs = StageInputs(str(tiny_bert), out=str(tmp_path / "out"))
    options = {"layers": 50, "data": str(sentiment_dir)}
    with pytest.raises(ConfigError, match=r"^--layers 50: the model has 2 layers"):  # the type crosses over
        worker.execute_isolated(STAGES["prune-structured"], options, inputs)
    stages = [{"name": "cut", "method": "prune-structured", "layers": 50, "isolated": True}]
    with pytest.raises(PrunekitError, match=r"stage 01-cut stopped: --layers 50: the model has 2 layers"):
        prunekit.run({"stages": stages}, model=str(tiny_bert), data=str(sentiment_dir), out=tmp_path / "run")
    assert not (tmp_path / "out").exists()


def test_a_worker_the_kernel_kills_stops_the_run_with_one_line_and_keeps_the_stages_before(
    tiny_bert, sentiment_dir, tmp_path
):
    _register()
    stages = [{"name": "prune", **PRUNE}, {"name": "boom", "method": "killed-by-kernel", "isolated": True}]
    with pytest.raises(PrunekitError, match=r"stage 02-boom stopped: the worker process .* SIGKILL \(most likely out"):
        prunekit.run({"stages": stages}, model=str(tiny_bert), data=str(sentiment_dir), out=tmp_path / "run")
    assert (tmp_path / "run" / "01-prune" / "stage.json").is_file()
    assert not (tmp_path / "run" / "02-boom").exists()
    resumed = [{"name": "prune", **PRUNE}]  # the finished stage is kept: --resume goes on from it
    prunekit.run({"stages": resumed}, model=str(tiny_bert), data=str(sentiment_dir), out=tmp_path / "run", resume=True)


def test_a_bug_in_the_worker_is_one_line_with_its_type(tiny_bert, sentiment_dir, tmp_path):
    _register()
    stages = [{"name": "big", "method": "out-of-memory", "isolated": True}]
    with pytest.raises(PrunekitError, match=r"stage 01-big stopped: MemoryError: cannot allocate 1 TB"):
        prunekit.run({"stages": stages}, model=str(tiny_bert), data=str(sentiment_dir), out=tmp_path / "run")


def test_isolated_must_be_a_boolean(tiny_bert, sentiment_dir, tmp_path):
    stages = [{"name": "prune", **PRUNE, "isolated": "yes"}]
    with pytest.raises(ConfigError, match=r"stages\[0\]\.isolated: expected true or false, got 'yes'"):
        prunekit.run({"stages": stages}, model=str(tiny_bert), data=str(sentiment_dir), out=tmp_path / "run")
