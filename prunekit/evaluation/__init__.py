"""Evaluation: official metrics on real data, size, and measured speed."""

from prunekit.evaluation.bench import LatencyStats, count_flops, make_inputs, measure_latency
from prunekit.evaluation.evaluate import evaluate_model, predict_logits
from prunekit.evaluation.perplexity import perplexity
from prunekit.evaluation.summary import evaluation_fields, make_summary, model_size
from prunekit.memory import peak_rss_mb as peak_memory_mb

__all__ = [
    "LatencyStats",
    "count_flops",
    "evaluate_model",
    "evaluation_fields",
    "make_inputs",
    "make_summary",
    "measure_latency",
    "model_size",
    "peak_memory_mb",
    "perplexity",
    "predict_logits",
]
