"""What every bench script shares: where data and results live, prunekit commands whose outputs are cached
by recipe hash, one timer for models compared with each other, and one writer for results.

- ``trained(*args)`` runs a model-producing prunekit command (finetune, prune, distill, ...) with ``--out``
  chosen from the hash of the command line: a parent asked for by several benches, or by a rerun of an
  interrupted one, is trained once (``$PRUNEKIT_BENCH_CACHE``, default ``$TMPDIR/prunekit-bench-cache``;
  delete it to start over). A model made from a cached model names that model's folder, so the hash
  covers the whole chain. ``measured(*args)`` does the same for deterministic ``--json`` results
  (evaluate); timings are measured anew on every run (``prunekit(..., "--json", PATH)``).
- ``time_together`` times models interleaved in this process (latency ratios share one stretch of
  machine time).
- ``write_results(name, record, markdown)`` writes ``bench/results/NAME.json`` (the record with the bench
  command line) and ``NAME.md`` (the command line, then the table), each atomically; partial results
  written after every arm survive an interruption. ``$PRUNEKIT_BENCH_RESULTS`` redirects them (smoke runs).
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from prunekit.io import write_json_atomic, write_text_atomic
from prunekit.methods.speed import measure_speedups
from prunekit.models import load_model
from prunekit.report.run_report import markdown_table

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared"
GLUE = SHARED / "data" / "glue"
SST2, MRPC, STSB = GLUE / "SST-2", GLUE / "MRPC", GLUE / "STS-B"
BROWN = SHARED / "data" / "brown"
RESULTS = Path(os.environ.get("PRUNEKIT_BENCH_RESULTS", HERE / "results"))
CACHE = Path(os.environ.get("PRUNEKIT_BENCH_CACHE", Path(tempfile.gettempdir()) / "prunekit-bench-cache"))

__all__ = [
    "BROWN", "CACHE", "GLUE", "MRPC", "RESULTS", "SST2", "STSB",
    "command_line", "markdown_table", "mean_std", "measured", "prunekit", "shown", "sst2_parent",
    "time_together", "trained", "work_dir", "write_results",
]  # fmt: skip


def prunekit(*args: str) -> dict:
    """Run a prunekit command and return the summary it wrote (``--out``'s summary.json or ``--json``);
    an ``--out`` folder that already holds a summary (an interrupted bench's) is reused, not rebuilt."""
    flag = "--json" if "--json" in args else "--out"
    path = Path(args[args.index(flag) + 1])
    summary = path if flag == "--json" else path / "summary.json"
    if flag == "--json" or not summary.is_file():
        subprocess.run([sys.executable, "-m", "prunekit", *map(str, args)], check=True, stdout=subprocess.DEVNULL)
    return json.loads(summary.read_text())


def recipe_hash(args: tuple) -> str:
    """The cache key of a command: its words, with paths resolved so the same input spelt another way matches."""
    words = [str(Path(a).resolve()) if isinstance(a, Path) else str(a) for a in args]
    return hashlib.sha256(json.dumps(words).encode()).hexdigest()[:16]


def _cached_path(args: tuple, suffix: str = "") -> Path:
    name = "-".join(str(a) for a in args[:2] if not str(a).startswith("-"))  # e.g. finetune, prune-structured
    path = CACHE / f"{name}-{recipe_hash(args)}{suffix}"
    record = CACHE / f"{path.name}.command.json"
    if not record.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps([str(a) for a in args]), encoding="utf-8")
    return path


def trained(*args: str | Path) -> tuple[Path, dict]:
    """The folder and summary of the model ``prunekit ARGS --out <cached>`` makes, made once per command."""
    out = _cached_path(args)
    return out, prunekit(*args, "--out", out)


def measured(*args: str | Path) -> dict:
    """The summary ``prunekit ARGS --json <cached>`` writes, run once per command: for deterministic results
    (evaluate), not timings."""
    path = _cached_path(args, ".json")
    return json.loads(path.read_text()) if path.is_file() else prunekit(*args, "--json", path)


def sst2_parent(train_samples: int = 8000, max_length: int = 64, seed: int = 42, passes: float = 1) -> tuple:
    """MiniLM fine-tuned (one pass) on a seeded SST-2 subset: the dense parent several benches prune or
    distil from (spelt here once, so they share one cached model)."""
    return trained("finetune", "--model", "minilm", "--data", SST2, "--max-train-samples", str(train_samples),
                   "--max-length", str(max_length), "--epochs", f"{passes:g}", "--seed", str(seed))  # fmt: skip


def work_dir(name: str) -> Path:
    """A kept scratch folder of this bench under the cache (files it derives, e.g. data splits)."""
    folder = CACHE / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def time_together(reference: Path, models: list[Path], shape: tuple[int, int] = (32, 64), repeats: int = 20) -> list:
    """Latency ratios (reference / model) of every model, all timed interleaved in this process: the ratios
    share one stretch of machine time, so drift hits all alike (one `prunekit bench` per model drifted +-12 %)."""
    loaded = [load_model(str(folder))[0] for folder in models]
    return measure_speedups(load_model(str(reference))[0], loaded, [shape], repeats=repeats)[0]


def mean_std(values: list[float], digits: int = 4) -> str:
    """``mean ± std`` over seeds (std 0 for one value)."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {std:.{digits}f}"


def shown(words: list, out: Path | None = None) -> str:
    """A prunekit command as results record it: ``prunekit WORDS``, shared data as ``../shared/...`` (as seen
    from the repository root) and ``out`` as DIR, not this machine's paths."""
    text = " ".join(["prunekit", *map(str, words)]).replace(str(SHARED), "../shared")
    return text.replace(str(out), "DIR") if out is not None else text


def command_line() -> str:
    """How this bench was run, repository-relative: ``python bench/NAME.py ARGS``."""
    return " ".join(["python", f"bench/{Path(sys.argv[0]).name}", *sys.argv[1:]])


def write_results(name: str, record: dict, markdown: str | None = None) -> None:
    """``RESULTS/NAME.json`` (``record`` plus ``benchmark`` and ``command``) and, with ``markdown``,
    ``RESULTS/NAME.md`` (the command line, then ``markdown``)."""
    record = {"benchmark": name, "command": command_line(), **record}
    write_json_atomic(RESULTS / f"{name}.json", record)
    if markdown is not None:
        write_text_atomic(RESULTS / f"{name}.md", f"Command: `{record['command']}`\n\n{markdown.rstrip()}\n")
