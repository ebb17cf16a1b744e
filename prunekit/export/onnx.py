"""ONNX export through ``torch.onnx`` (the dynamo exporter), checked against PyTorch under ONNX Runtime.

The graph takes the tokenizer's inputs (``input_ids``, ``attention_mask`` and, for BERT-style pairs,
``token_type_ids``) with a dynamic batch and sequence length and returns the logits: class logits for
a classifier, next-token logits at every position for a causal LM (no KV cache: a prefill / scoring
graph). Pruned models export as they are — per-layer widths are just tensor shapes — and zeros of an
unstructured-sparse model stay zeros in dense ONNX initialisers.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from prunekit.errors import ExportError, first_line
from prunekit.evaluation.bench import LatencyStats, measure_latency
from prunekit.evaluation.evaluate import check_finite_outputs
from prunekit.models import is_causal_lm

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")  # in the graph's order, when the tokenizer has them


class LogitsGraph(nn.Module):
    """The model as a function of its token tensors returning only the logits (no KV cache)."""

    def __init__(self, model: PreTrainedModel):
        super().__init__()
        self.model = model
        self.extra = {"use_cache": False} if is_causal_lm(model.config) else {}

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        return self.model(**{k: v for k, v in inputs.items() if v is not None}, **self.extra).logits


def graph_inputs(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> tuple[str, ...]:
    """The tokenizer's inputs that the model's forward takes (a Llama ignores BERT-style segment ids)."""
    accepted = inspect.signature(model.forward).parameters
    return tuple(name for name in INPUT_NAMES if name in tokenizer.model_input_names and name in accepted)


def sample_inputs(
    model: PreTrainedModel, names: tuple[str, ...], batch_size: int, seq_len: int, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Random token ids; with two or more rows the second is padded from half its length and
    ``token_type_ids`` mark a second segment, so the check covers masking and pairs too."""
    generator = torch.Generator().manual_seed(seed)
    vocab = model.get_input_embeddings().num_embeddings
    input_ids = torch.randint(0, vocab, (batch_size, seq_len), generator=generator)
    mask = torch.ones_like(input_ids)
    if batch_size > 1:
        mask[1, seq_len // 2 :] = 0
    inputs = {"input_ids": input_ids, "attention_mask": mask}
    if "token_type_ids" in names:
        types = torch.zeros_like(input_ids)
        types[:, seq_len // 2 :] = 1
        inputs["token_type_ids"] = types
    return {name: inputs[name] for name in names}


def export_onnx(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: str | os.PathLike, opset: int
) -> tuple[str, ...]:
    """Write ``model`` as an ONNX file at ``path`` (a temp file renamed into place); returns the inputs."""
    names = graph_inputs(model, tokenizer)
    model.eval()
    example = tuple(sample_inputs(model, names, 2, 16).values())
    batch, length = torch.export.Dim("batch"), torch.export.Dim("sequence")
    dynamic = {name: {0: batch, 1: length} for name in names}
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with _quiet():
            program = torch.onnx.export(
                LogitsGraph(model).eval(),
                example,
                input_names=list(names),
                output_names=["logits"],
                dynamic_shapes=dynamic,
                opset_version=opset,
                dynamo=True,
            )
            program.save(str(tmp))
        written = written_opset(tmp)
        if written != opset:
            raise ExportError(f"--opset {opset}: torch.onnx wrote opset {written} instead; nothing was saved")
        os.replace(tmp, path)
    except ExportError:
        raise
    except Exception as err:  # the exporter's own errors are long; say what failed in one line
        raise ExportError(f"torch.onnx could not export the model: {type(err).__name__}: {first_line(err)}") from err
    finally:
        tmp.unlink(missing_ok=True)
    return names


def written_opset(path: str | os.PathLike) -> int | None:
    """The default-domain opset an ONNX file declares."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), None)


class OnnxRunner:
    """An ONNX Runtime session called like a model (``runner(**inputs)``), so the same interleaved
    timer measures it beside the PyTorch model."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # an invalid graph, an opset this runtime lacks
            raise ExportError(f"ONNX Runtime cannot load {path}: {first_line(err)}") from None

    def eval(self) -> OnnxRunner:
        return self

    def __call__(self, **inputs: torch.Tensor) -> np.ndarray:
        return self.session.run(["logits"], {name: tensor.numpy() for name, tensor in inputs.items()})[0]


def max_difference(
    model: PreTrainedModel,
    runner: OnnxRunner,
    inputs: dict[str, torch.Tensor],
    rtol: float = 0.0,
    exact: PreTrainedModel | None = None,
) -> tuple[float, float]:
    """The largest absolute difference between ONNX Runtime's and PyTorch's logits, and how far past
    parity it goes (parity holds when that is <= atol). Against PyTorch: the largest
    ``|got - expected| - rtol * |expected|`` (numpy's allclose rule). With ``exact`` (the model in
    float64): how much further ONNX Runtime is from the float64 logits than PyTorch's float32 ones are.
    Padded positions of a causal LM are left out: their logits are not defined by the inputs."""
    with torch.inference_mode():
        expected = LogitsGraph(model).eval()(**inputs).float().numpy()
        reference = LogitsGraph(exact).eval()(**inputs).numpy() if exact is not None else None
    got = runner(**inputs)
    check_finite_outputs(torch.from_numpy(expected), "logits in PyTorch")
    if got.shape != expected.shape:
        raise ExportError(f"ONNX Runtime returned logits of shape {got.shape}, PyTorch {expected.shape}")
    if got.ndim == 3:  # (batch, sequence, vocabulary)
        kept = inputs["attention_mask"].numpy().astype(bool)
        got, expected = got[kept], expected[kept]
        reference = reference[kept] if reference is not None else None
    difference = np.abs(got - expected)
    if reference is not None:
        return float(difference.max()), float(np.abs(got - reference).max() - np.abs(expected - reference).max())
    return float(difference.max()), float((difference - rtol * np.abs(expected)).max())


def time_against_torch(
    model: PreTrainedModel, runner: OnnxRunner, inputs: dict[str, torch.Tensor], threads: int, repeats: int
) -> tuple[LatencyStats, LatencyStats]:
    """PyTorch's and ONNX Runtime's latency on the same batch, interleaved in one run."""
    graph = LogitsGraph(model)
    return tuple(measure_latency([graph, runner], [inputs, inputs], threads=threads, repeats=repeats))


@contextlib.contextmanager
def _quiet():
    """The exporter prints progress and warnings (missing torchvision ops, ...) on a successful export."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch._dynamo", "torch.export", "onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
