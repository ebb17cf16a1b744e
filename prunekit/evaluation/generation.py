"""Generation speed of causal LMs: prefill latency and greedy decode throughput with the KV cache,
several models timed interleaved in one run (as ``evaluation.bench`` does for a forward pass)."""

from __future__ import annotations

import inspect
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from prunekit.adapters import get_adapter
from prunekit.devices import synchronize
from prunekit.evaluation.bench import TimingRecord, make_inputs


@dataclass
class GenerationStats(TimingRecord):
    """Medians over ``repeats`` timed runs: the prompt's forward pass, then ``new_tokens`` greedy steps."""

    prefill_ms: float
    decode_tokens_per_s: float  # new tokens per second over the batch, prefill excluded
    decode_ms_per_token: float
    kv_cache_bytes_per_token: int
    prompt_len: int
    new_tokens: int
    batch_size: int
    repeats: int
    threads: int


def kv_cache_bytes_per_token(model: PreTrainedModel) -> int:
    """Bytes the KV cache grows by per token of one sequence: keys and values of every layer's KV heads
    (per-layer counts, so pruned KV groups show)."""
    element = next(model.parameters()).element_size()
    return sum(
        2 * layer.attention.num_kv_heads * layer.attention.head_dim * element for layer in get_adapter(model).layers()
    )


@torch.inference_mode()
def _generate(model: PreTrainedModel, input_ids: torch.Tensor, new_tokens: int) -> tuple[float, float]:
    """(prefill seconds, decode seconds) of greedy generation of ``new_tokens`` after ``input_ids``."""
    # transformers renamed ``past_key_values`` to ``cache`` during v5
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    device = input_ids.device
    synchronize(device)
    start = time.perf_counter()
    output = model(input_ids=input_ids, use_cache=True)
    synchronize(device)
    prefill = time.perf_counter() - start
    for _ in range(new_tokens):
        token = output.logits[:, -1:].argmax(-1)
        output = model(input_ids=token, use_cache=True, **{name: output[name]})
    synchronize(device)
    return prefill, time.perf_counter() - start - prefill


def measure_generation(
    models: Sequence[PreTrainedModel],
    *,
    prompt_len: int = 128,
    new_tokens: int = 64,
    batch_size: int = 1,
    threads: int = 2,
    warmup: int = 2,
    repeats: int = 10,
) -> list[GenerationStats]:
    """Time each model's generation, interleaved A B A B so drift hits every model alike."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    prompts = [make_inputs(model, batch_size, prompt_len)["input_ids"] for model in models]
    timings: list[list[tuple[float, float]]] = [[] for _ in models]
    try:
        for model in models:
            model.eval()
        for round_index in range(warmup + repeats):
            for model, prompt, times in zip(models, prompts, timings):
                result = _generate(model, prompt, new_tokens)
                if round_index >= warmup:
                    times.append(result)
    finally:
        torch.set_num_threads(previous_threads)
    stats = []
    for model, times in zip(models, timings):
        decode = statistics.median(d for _, d in times)
        stats.append(
            GenerationStats(
                prefill_ms=statistics.median(p for p, _ in times) * 1000.0,
                decode_tokens_per_s=new_tokens * batch_size / decode,
                decode_ms_per_token=decode * 1000.0 / new_tokens,
                kv_cache_bytes_per_token=kv_cache_bytes_per_token(model),
                prompt_len=prompt_len,
                new_tokens=new_tokens,
                batch_size=batch_size,
                repeats=repeats,
                threads=threads,
            )
        )
    return stats
