"""The ``export`` stage: the model as an ONNX file checked against PyTorch under ONNX Runtime and timed
beside it (``format: onnx``), or a plain copy of its Hugging Face folder (``format: hf``)."""

from __future__ import annotations

import copy
import shutil
from dataclasses import dataclass
from pathlib import Path

from prunekit.errors import ConfigError, ExportError, PrunekitError
from prunekit.evaluation.bench import REPEATS
from prunekit.options import int_range, non_negative, option, positive, positive_int, same_option
from prunekit.stages.base import StageContext, StageResult, register_stage
from prunekit.stages.bench import TimingConfig
from prunekit.stages.inputs import load_saved

OPSET = 18  # ONNX opset of the exported graph unless --opset says otherwise
# what torch.onnx (dynamo) writes as asked and ONNX Runtime loads here: below 17 it silently writes 18,
# above 25 an invalid graph (tests/test_export.py checks both ends)
OPSETS = (17, 25)


@dataclass
class ExportStageConfig:
    """``export``: the format, the ONNX opset, the parity check's bounds and the timing shape."""

    format: str = option(
        "onnx", "onnx: an ONNX graph checked against PyTorch; hf: a copy of the model folder", choices=("onnx", "hf")
    )
    opset: int = option(OPSET, f"ONNX opset version, {OPSETS[0]} to {OPSETS[1]}", parse=int_range(*OPSETS))
    atol: float = option(1e-4, "largest difference allowed between ONNX Runtime's and PyTorch's logits",
                         parse=positive)  # fmt: skip
    rtol: float = option(
        0.0,
        "also allow this fraction of each logit's size (numpy's allclose rule: |a - b| <= atol + rtol x |b|)",
        parse=non_negative,
    )
    reference: str = option(
        "float32",
        "float32: ONNX Runtime's logits within --atol (+ --rtol) of PyTorch's; float64: ONNX Runtime no further "
        "from the model run in float64 than PyTorch's float32 logits are, plus --atol (for large decoders, whose "
        "float32 rounding alone exceeds 1e-4)",
        choices=("float32", "float64"),
    )
    batch_size: int = option(1, "timing: sequences per batch (a single request)", parse=positive_int)
    seq_len: int = same_option(TimingConfig, "seq_len")
    threads: int = same_option(TimingConfig, "threads")
    repeats: int | None = same_option(TimingConfig, "repeats")


@register_stage(
    "export",
    ExportStageConfig,
    "export the current model (format: onnx or hf)",
    load=load_saved,
    makes_model=False,
)
def run_export(context: StageContext, config: ExportStageConfig) -> StageResult:
    """Write ``context.model`` to ``context.out``: an ONNX file (removed again if ONNX Runtime's logits
    miss the bound), or a copy of its folder."""
    if config.format == "hf":
        shutil.copytree(context.model_path, context.out, ignore=shutil.ignore_patterns("stage.json", "log.txt",
                                                                                        "summary.json"))  # fmt: skip
        fields = {"format": "hf", "path": str(context.out)}
        return StageResult("export", context.model, context.tokenizer, fields, save_format=None)
    return _onnx(context, config)


def _onnx(context: StageContext, config: ExportStageConfig) -> StageResult:
    import importlib.util

    from prunekit.export import OnnxRunner, export_onnx, max_difference, sample_inputs, time_against_torch

    missing = [name for name in ("onnx", "onnxruntime", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"export onnx needs {', '.join(missing)}: pip install 'prunekit[export]'")
    model, out = context.model, Path(context.out)
    names = export_onnx(model, context.tokenizer, out, config.opset)
    try:
        runner = OnnxRunner(out, config.threads)
        # a small padded batch, then the timed shape: both checked, the second also timed
        batches = [
            sample_inputs(model, names, 2, 16, seed=0),
            sample_inputs(model, names, config.batch_size, config.seq_len, seed=1),
        ]
        exact = copy.deepcopy(model).double() if config.reference == "float64" else None
        differences = [max_difference(model, runner, batch, config.rtol, exact) for batch in batches]
        del exact
        difference, excess = max(d for d, _ in differences), max(e for _, e in differences)
        if not excess <= config.atol:  # NaN fails too
            if config.reference == "float64":
                bound = f"{excess:.3g} further from float64 than PyTorch float32 is, > --atol {config.atol:g}"
            else:
                bound = f"> --atol {config.atol:g}" + (f" + --rtol {config.rtol:g} x |logit|" if config.rtol else "")
            raise ExportError(f"--out {out}: ONNX Runtime's logits differ from PyTorch's by {difference:.3g} ({bound})")
    except BaseException as err:  # a file that failed its check is not left behind
        out.unlink(missing_ok=True)
        if isinstance(err, PrunekitError):
            raise type(err)(f"{err}; {out} was removed") from None
        raise
    torch_stats, onnx_stats = time_against_torch(model, runner, batches[1], config.threads, config.repeats or REPEATS)
    fields = dict(
        format="onnx",
        path=str(out),
        size_bytes=out.stat().st_size,
        inputs=list(names),
        opset=config.opset,
        max_abs_diff=difference,
        atol=config.atol,
        rtol=config.rtol,
        reference=config.reference,
        beyond_reference=round(excess, 9) if config.reference == "float64" else None,
        onnxruntime_latency_ms=onnx_stats.as_dict(),
        torch_latency_ms=torch_stats.as_dict(),
        ratio_vs_torch=round(torch_stats.median / onnx_stats.median, 4),
    )
    return StageResult("export", model, context.tokenizer, fields, save_format=None)
