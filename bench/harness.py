"""What the bench scripts share (the start of #16's bench harness): running prunekit's CLI so that a
finished step of an interrupted bench is reused instead of run again, and timing a seed's models together."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from prunekit.methods.speed import measure_speedups
from prunekit.models import load_model


def prunekit(*args: str) -> dict:
    """Run a prunekit command and return the summary it wrote (``--out``'s summary.json or ``--json``);
    an ``--out`` folder that already holds a summary (an interrupted bench's) is reused, not rebuilt."""
    flag = "--json" if "--json" in args else "--out"
    path = Path(args[args.index(flag) + 1])
    summary = path if flag == "--json" else path / "summary.json"
    if flag == "--json" or not summary.is_file():
        subprocess.run([sys.executable, "-m", "prunekit", *args], check=True, stdout=subprocess.DEVNULL)
    return json.loads(summary.read_text())


def time_together(reference: Path, models: list[Path], shape: tuple[int, int] = (32, 64), repeats: int = 20) -> list:
    """Latency ratios (reference / model) of every model, all timed interleaved in this process: the ratios
    share one stretch of machine time, so drift hits all alike (one `prunekit bench` per model drifted +-12 %)."""
    loaded = [load_model(str(folder))[0] for folder in models]
    return measure_speedups(load_model(str(reference))[0], loaded, [shape], repeats=repeats)[0]
