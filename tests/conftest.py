from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # no test may reach the hub; set before transformers is imported

import pytest

from tests.tiny import save_tiny_causal_lm, save_tiny_model, tiny_text

REPO = Path(__file__).resolve().parents[1]
GLUE = REPO.parent / "shared" / "data" / "glue"

POSITIVE = ["a great film", "very good movie", "the film is great", "good , very good", "a good movie"]
NEGATIVE = ["an awful film", "very bad movie", "the film is not good", "bad , very bad", "awful movie"]


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return save_tiny_model("bert", tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_llama_lm(tmp_path_factory) -> Path:
    """A tiny random Llama causal LM (GQA: 8 query heads over 2 KV heads)."""
    return save_tiny_causal_lm("llama", tmp_path_factory.mktemp("tiny-llama-lm"))


@pytest.fixture(scope="session")
def text_dir(tmp_path_factory) -> Path:
    """A Brown-layout corpus: ``train.txt`` and ``dev.txt``, a few kB each."""
    folder = tmp_path_factory.mktemp("corpus") / "text"
    folder.mkdir()
    (folder / "train.txt").write_text(tiny_text(200, seed=1))
    (folder / "dev.txt").write_text(tiny_text(40, seed=2))
    return folder


@pytest.fixture(scope="session")
def sentiment_dir(tmp_path_factory) -> Path:
    """An SST-2-layout folder of easy synthetic sentiment data (header, 0/1 labels)."""
    folder = tmp_path_factory.mktemp("data") / "SST-2"
    folder.mkdir()
    rng = random.Random(0)
    for name, count in (("train", 96), ("dev", 32)):
        rows = [(rng.choice(POSITIVE), 1) if i % 2 else (rng.choice(NEGATIVE), 0) for i in range(count)]
        (folder / f"{name}.tsv").write_text("sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in rows))
    return folder


def glue_dir(name: str) -> Path:
    folder = GLUE / name
    if not folder.is_dir():
        pytest.skip(f"real GLUE data not found at {folder}")
    return folder


def cli(command: str) -> int:
    """Run ``prunekit COMMAND`` in-process, e.g. ``cli(f"evaluate --model {folder} --data {data}")``."""
    import shlex

    from prunekit.cli import main

    return main(shlex.split(command))


def tree_digest(root: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file below ``root`` (folders as entries too)."""
    digest = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        digest[key] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return digest
