"""Peak memory of structured pruning on SmolLM2-135M with every setting at its default (#28 item 6), and
which phase holds it.

The command a new user would try, `prunekit prune structured --model smollm2 --data ../shared/data/brown
--heads 0.67 --ffn 0.75`, runs as a child process; this script samples the child's resident memory
(VmRSS) every 0.2 s and splits the samples into phases by what the child prints (its progress bars:
`importance` while scoring, `perplexity` while evaluating, `Writing` while saving; everything before the
first bar is loading and the calibration draw, from the scores' last step to the evaluation the surgery).
The child's own peak is its summary's `peak_rss_mb` (VmHWM). Target: peak <= 3 GiB.

Run: python bench/structured_memory.py [--extra FLAGS...] -> bench/results/structured-memory.{json,md}
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from harness import BROWN, markdown_table, shown, work_dir, write_results

COMMAND = ["prune", "structured", "--model", "smollm2", "--data", str(BROWN), "--heads", "0.67", "--ffn", "0.75"]
TARGET_MB = 3 * 1024
PHASES = (("importance", "scoring"), ("perplexity", "evaluation"), ("Writing", "saving"))  # marker -> phase


def _rss_mb(pid: int) -> float | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    found = re.search(r"VmRSS:\s+(\d+)", text)
    return int(found.group(1)) / 1024 if found else None


def run_sampled(words: list[str]) -> tuple[int, dict[str, float], float]:
    """Run ``prunekit WORDS``; its exit status, the peak RSS (MiB) of each phase, and the seconds taken."""
    child = subprocess.Popen([sys.executable, "-m", "prunekit", *words], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)  # fmt: skip
    phase, peaks = ["loading"], {}

    def follow_progress() -> None:  # the phase is named by the last progress bar the child printed
        # read as it comes: progress bars redraw with carriage returns, not newlines
        for chunk in iter(lambda: os.read(child.stderr.fileno(), 4096), b""):
            for part in re.split(r"[\r\n]", chunk.decode(errors="replace")):
                for marker, name in PHASES:
                    if part.startswith(marker):
                        phase[0] = name
                if phase[0] == "scoring" and part and not part.strip():  # the bar cleared: scored
                    phase[0] = "surgery"

    reader = threading.Thread(target=follow_progress, daemon=True)
    reader.start()
    started = time.perf_counter()
    while child.poll() is None:
        rss = _rss_mb(child.pid)
        if rss is not None:
            peaks[phase[0]] = max(peaks.get(phase[0], 0.0), rss)
        time.sleep(0.2)
    reader.join(timeout=5)
    return child.returncode, {name: round(mb, 1) for name, mb in peaks.items()}, round(time.perf_counter() - started, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="flags added to the command")
    args = parser.parse_args()
    out = work_dir("structured-memory") / "pruned"
    shutil.rmtree(out, ignore_errors=True)
    words = [*COMMAND, *args.extra, "--out", str(out)]
    code, phases, seconds = run_sampled(words)
    if code != 0:
        sys.exit(f"prunekit exited with {code}; phase peaks so far: {phases}")
    summary = json.loads((out / "summary.json").read_text())
    peak = summary["peak_rss_mb"]
    record = {
        "prunekit_command": shown(words, out),
        "seconds": seconds,
        "peak_rss_mb": peak,
        "phase_peak_rss_mb": phases,
        "perplexity": summary["metrics"]["perplexity"],
        "target_mb": TARGET_MB,
        "met": peak <= TARGET_MB,
    }
    rows = [[name, f"{mb:,.0f}"] for name, mb in phases.items()]
    table = markdown_table(["phase", "peak RSS (MiB, sampled)"], rows)
    verdict = "met" if record["met"] else "MISSED"
    text = (f"`{record['prunekit_command']}`: peak RSS {peak:,.0f} MiB (VmHWM) in {seconds:.0f} s; target <= "
            f"{TARGET_MB:,} MiB: **{verdict}**.\n\n{table}\n")  # fmt: skip
    write_results("structured-memory", record, text)
    print(text)


if __name__ == "__main__":
    main()
