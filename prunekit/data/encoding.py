"""Tokenise a split once; pad per batch (dynamic padding) in the collator."""

from __future__ import annotations

import torch
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from prunekit.data.readers import Split


class EncodedSplit(torch.utils.data.Dataset):
    """A split tokenised up front: item ``i`` is ``{input_ids, attention_mask, ..., labels}``
    (plus ``example_index: i`` with ``with_index``, for per-example caches such as teacher logits)."""

    def __init__(
        self,
        split: Split,
        tokenizer: PreTrainedTokenizerBase,
        max_length: int,
        regression: bool,
        with_index: bool = False,
    ):
        encoded = tokenizer(split.text_a, split.text_b, truncation=True, max_length=max_length)
        self._columns = {key: list(values) for key, values in encoded.items()}
        self._labels = [float(v) for v in split.labels] if regression else [int(v) for v in split.labels]
        self._with_index = with_index

    def __len__(self) -> int:
        return len(self._labels)

    def __getitem__(self, index: int) -> dict[str, list[int] | int | float]:
        item = {key: values[index] for key, values in self._columns.items()}
        item["labels"] = self._labels[index]
        if self._with_index:
            item["example_index"] = index
        return item


def make_collator(tokenizer: PreTrainedTokenizerBase) -> DataCollatorWithPadding:
    """Pads each batch to its longest sequence (to a multiple of 8, friendlier to matmul kernels)."""
    return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8)


def encode_batches(
    split: Split, tokenizer: PreTrainedTokenizerBase, max_length: int, regression: bool, batch_size: int = 32
) -> list[dict[str, torch.Tensor]]:
    """``split`` tokenised and padded into batches (with labels), in order: calibration data."""
    dataset = EncodedSplit(split, tokenizer, max_length, regression)
    return list(torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=make_collator(tokenizer)))
