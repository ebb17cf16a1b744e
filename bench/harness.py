"""What the bench scripts share (the start of #16's bench harness): running prunekit's CLI so that a
finished step of an interrupted bench is reused instead of run again."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def prunekit(*args: str) -> dict:
    """Run a prunekit command and return the summary it wrote (``--out``'s summary.json or ``--json``);
    an ``--out`` folder that already holds a summary (an interrupted bench's) is reused, not rebuilt."""
    flag = "--json" if "--json" in args else "--out"
    path = Path(args[args.index(flag) + 1])
    summary = path if flag == "--json" else path / "summary.json"
    if flag == "--json" or not summary.is_file():
        subprocess.run([sys.executable, "-m", "prunekit", *args], check=True, stdout=subprocess.DEVNULL)
    return json.loads(summary.read_text())
