"""Plain-text corpora for language modelling: a ``.txt`` file, or a folder with ``train.txt`` and
``dev.txt`` (the Brown layout). The task is ``lm``; its metric is perplexity."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from prunekit.data.readers import decode_file
from prunekit.data.sources import EVAL_STEMS, is_text_corpus
from prunekit.data.tasks import LM_TASK, TaskSpec
from prunekit.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

__all__ = [
    "BlockDataset",
    "TextCorpus",
    "TextSplit",
    "calibration_batches",
    "calibration_blocks",
    "is_text_corpus",
    "load_text_corpus",
    "packed_blocks",
    "token_stream",
]


@dataclass
class TextSplit:
    """One split of a corpus: its whole text, as read. For training it is cut into blocks of tokens;
    ``max_blocks`` keeps a seeded random subset of them (``--max-train-samples``)."""

    text: str
    source: str
    max_blocks: int | None = None
    seed: int = 42
    _blocks: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # packed_blocks' cache


@dataclass
class TextCorpus:
    """A language-modelling corpus (``TaskData``'s counterpart for the ``lm`` task)."""

    train: TextSplit | None
    eval: TextSplit | None
    task: TaskSpec = LM_TASK


def load_text_corpus(
    data: str | None,
    *,
    train_file: str | None = None,
    eval_file: str | None = None,
    need_train: bool = True,
    need_eval: bool = True,
    encoding: str = "utf-8",
) -> TextCorpus:
    """Read a corpus. A single ``.txt`` file serves for what is asked (train and/or evaluation; both from
    one file is warned about: the metric is then not held out)."""
    train_path = Path(train_file) if train_file else None
    eval_path = Path(eval_file) if eval_file else None
    if data is not None:
        path = Path(data).expanduser()
        if not path.exists():
            raise DataError(f"--data {data}: no such file or folder")
        if path.is_file():
            train_path, eval_path = train_path or path, eval_path or path
        else:
            train_path = train_path or _find(path, ("train",))
            eval_path = eval_path or _find(path, EVAL_STEMS)
    for flag, needed, found in (("train", need_train, train_path), ("evaluation", need_eval, eval_path)):
        if needed and found is None:
            stems = "train.txt" if flag == "train" else " or ".join(f"{s}.txt" for s in EVAL_STEMS)
            raise DataError(f"--data {data}: no {flag} text; expected {stems} in the folder")
    if need_train and need_eval and train_path.resolve() == eval_path.resolve():
        logger.warning("%s serves as training and evaluation text: the perplexity is not on held-out text; "
                       "pass --eval FILE for a held-out one", train_path)  # fmt: skip
    return TextCorpus(
        train=_read(train_path, encoding) if need_train else None,
        eval=_read(eval_path, encoding) if need_eval else None,
    )


def _find(folder: Path, stems: tuple[str, ...]) -> Path | None:
    return next((folder / f"{stem}.txt" for stem in stems if (folder / f"{stem}.txt").is_file()), None)


def _read(path: Path, encoding: str) -> TextSplit:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    text = decode_file(path, encoding)
    if not text.strip():
        raise DataError(f"{path}: the file holds no text")
    return TextSplit(text, str(path))


CHUNK_CHARS = 1 << 16


def _chunks(text: str, size: int = CHUNK_CHARS) -> list[str]:
    """``text`` cut into pieces of about ``size`` characters, each cut just before a line break that
    follows a visible character: pre-tokenizers end a word or punctuation run there, so tokenizing the
    pieces gives the tokens of the whole (a cut after line breaks would not: a run of them at the end
    of a piece becomes one token). Exact for byte-level BPE (SmolLM2, checked on Brown) and WordPiece;
    a SentencePiece tokenizer with a dummy prefix adds one token per piece (one in ~15,000)."""
    pieces, start = [], 0
    while start < len(text):
        end = start + size
        while end < len(text) and not (text[end] == "\n" and not text[end - 1].isspace()):
            end += 1
        pieces.append(text[start:end])
        start = end
    return pieces


def token_stream(tokenizer: PreTrainedTokenizerBase, split: TextSplit, max_tokens: int | None = None) -> torch.Tensor:
    """The split's text as one sequence of token ids (no special tokens), cut to ``max_tokens``.
    Tokenized piece by piece: a fast tokenizer's output for a whole corpus at once takes ~0.7 GB for
    1M tokens (offsets, token strings), more than a 135M-parameter model's pruning needs."""
    ids: list[int] = []
    for piece in _chunks(split.text, CHUNK_CHARS):
        ids += tokenizer(piece, add_special_tokens=False, return_attention_mask=False)["input_ids"]
        if max_tokens and len(ids) >= max_tokens:
            break
    if len(ids) < 2:
        raise DataError(f"{split.source}: fewer than 2 tokens; perplexity needs at least 2")
    return torch.tensor(ids[:max_tokens] if max_tokens else ids, dtype=torch.long)


def calibration_blocks(
    tokenizer: PreTrainedTokenizerBase, split: TextSplit, samples: int, length: int, seed: int
) -> list[dict[str, torch.Tensor]]:
    """``samples`` windows of ``length`` tokens at seeded random offsets in the split (SparseGPT's and
    Wanda's calibration draw), each a batch of one: ``{input_ids, attention_mask}``."""
    ids = token_stream(tokenizer, split)
    if len(ids) <= length:
        raise ConfigError(
            f"--calibration-length {length}: {split.source} has only {len(ids)} tokens; pass a shorter length"
        )
    rng = random.Random(seed)
    starts = [rng.randrange(len(ids) - length) for _ in range(samples)]
    return [
        {"input_ids": ids[s : s + length][None], "attention_mask": torch.ones(1, length, dtype=torch.long)}
        for s in starts
    ]


def calibration_batches(
    tokenizer: PreTrainedTokenizerBase, split: TextSplit, samples: int, length: int, seed: int, batch_size: int
) -> list[dict[str, torch.Tensor]]:
    """The ``calibration_blocks`` windows in batches of ``batch_size``, labelled with their own tokens
    (the language-modelling loss that gradient-based unit scores need)."""
    blocks = calibration_blocks(tokenizer, split, samples, length, seed)
    batches = [
        {k: torch.cat([b[k] for b in blocks[i : i + batch_size]]) for k in blocks[0]}
        for i in range(0, len(blocks), batch_size)
    ]
    return [{**batch, "labels": batch["input_ids"]} for batch in batches]


def packed_blocks(tokenizer: PreTrainedTokenizerBase, split: TextSplit, length: int) -> torch.Tensor:
    """The split's token stream cut into consecutive blocks of ``length`` tokens, shape (blocks, length):
    causal-LM training data with no padding (the last partial block is dropped). Kept on the split, so
    counting the blocks (``--epochs auto``) and training tokenize the corpus once."""
    key = (tokenizer.name_or_path, len(tokenizer), length, split.max_blocks, split.seed)
    if key not in split._blocks:
        split._blocks[key] = _pack(tokenizer, split, length)
    return split._blocks[key]


def _pack(tokenizer: PreTrainedTokenizerBase, split: TextSplit, length: int) -> torch.Tensor:
    ids = token_stream(tokenizer, split)
    count = len(ids) // length
    if count == 0:
        raise DataError(f"{split.source}: {len(ids)} tokens, fewer than one block of --max-length {length}")
    blocks = ids[: count * length].view(count, length)
    if split.max_blocks is not None and split.max_blocks < count:
        blocks = blocks[sorted(random.Random(split.seed).sample(range(count), split.max_blocks))]
    return blocks


class BlockDataset(torch.utils.data.Dataset):
    """Blocks of token ids as causal-LM examples: the model shifts the labels (its inputs) itself."""

    def __init__(self, blocks: torch.Tensor):
        self.blocks = blocks

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.blocks[index], "labels": self.blocks[index]}
