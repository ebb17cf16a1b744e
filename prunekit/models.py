"""Find, load and measure models: local folders, the packaged ``minilm`` alias, or hub ids."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from prunekit.adapters import check_supported
from prunekit.data.tasks import TaskSpec
from prunekit.errors import ConfigError, ModelError, first_line
from prunekit.packaged import PACKAGED_MODELS
from prunekit.pruning.sparse_format import SPARSE_FILE, load_sparse

logger = logging.getLogger(__name__)

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    SPARSE_FILE,  # prunekit's bitmask format (see prunekit.pruning.sparse_format)
)


def resolve_model(name: str, flag: str = "--model") -> str:
    """A local folder (checked for config and weights), an alias's folder, or a hub id passed through.

    A name that can only be a path (``./x``, ``/x``, ``runs/x`` where ``runs`` exists) and does not
    exist is a missing folder, never a hub look-up.
    """
    if name in PACKAGED_MODELS:
        return PACKAGED_MODELS[name]()
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelError(f"{flag} {name}: expected a model folder, found a file")
        if not (path / "config.json").is_file():
            raise ModelError(f"{flag} {name}: folder has no config.json; expected a Hugging Face model folder")
        if not any((path / f).is_file() for f in WEIGHT_FILES):
            raise ModelError(f"{flag} {name}: folder has no weights; expected one of {', '.join(WEIGHT_FILES)}")
        return str(path)
    first_part = Path(path.parts[0]) if path.parts else path
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or (len(path.parts) > 1 and first_part.is_dir()):
        raise ModelError(f"{flag} {name}: no such folder")
    return name  # a hub id, for users with a network


def load_config(path: str, flag: str = "--model", **overrides) -> PretrainedConfig:
    try:
        config = AutoConfig.from_pretrained(path, **overrides)
    except Exception as err:  # transformers/hub raise many types; the first line says what happened
        if not Path(path).is_dir():
            raise ModelError(
                f"{flag} {path}: no such folder, and not loadable from the Hugging Face hub ({first_line(err)})"
            ) from None
        raise ModelError(f"{flag} {path}: could not read its config ({first_line(err)})") from None
    check_supported(config, where=f"{flag} {path}")
    return config


def max_positions(config: PretrainedConfig) -> int | None:
    """The longest input (tokens) the model's position embeddings allow, or None if unbounded."""
    limit = getattr(config, "max_position_embeddings", None)
    if limit is None:
        return None
    if "roberta" in config.model_type:  # RoBERTa's positions start after padding_idx
        limit -= (config.pad_token_id or 0) + 1
    return limit


def check_max_length(config: PretrainedConfig, length: int, flag: str = "--max-length", where: str = "") -> None:
    """Refuse inputs longer than the model's position embeddings before any work."""
    limit = max_positions(config)
    if limit is not None and length > limit:
        raise ConfigError(f"{flag} {length}: the model{where} takes at most {limit} tokens")


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "tokenizer.model")


def load_tokenizer(path: str, flag: str = "--model") -> PreTrainedTokenizerBase:
    # transformers builds an empty, all-[UNK] tokenizer for a folder without tokenizer files.
    if Path(path).is_dir() and not any((Path(path) / name).is_file() for name in TOKENIZER_FILES):
        raise ModelError(f"{flag} {path}: folder has no tokenizer; expected one of {', '.join(TOKENIZER_FILES)}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as err:  # corrupt tokenizer.json etc. raise many types
        raise ModelError(f"{flag} {path}: could not load its tokenizer ({first_line(err)})") from None
    if tokenizer.pad_token is None:  # decoders ship without one; batching needs it
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def is_causal_lm(config: PretrainedConfig) -> bool:
    """Whether a model folder holds a causal language model (``*ForCausalLM``) rather than a classifier."""
    return any(name.endswith("ForCausalLM") for name in getattr(config, "architectures", None) or ())


def model_class(config: PretrainedConfig, task: TaskSpec | None = None) -> type:
    """The Auto class to build ``config`` with: a causal LM for the ``lm`` task (or, with no task, for a
    folder saved as one), else a sequence classifier."""
    causal = task.causal_lm if task is not None else is_causal_lm(config)
    return AutoModelForCausalLM if causal else AutoModelForSequenceClassification


def load_model(
    name: str,
    task: TaskSpec | None = None,
    flag: str = "--model",
    trained_head: bool = False,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    max_memory: str | None = None,
    offload_folder: str | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model with a sequence-classification head (a causal LM for the ``lm`` task), and its tokenizer.

    With a classification ``task`` the head is (re)built for the task's labels, as fine-tuning needs;
    without a task the model loads as saved (a fine-tuned model to evaluate or benchmark, or a causal
    LM saved as one). ``flag`` names the option the user passed the model with, for error messages.
    Loading is strict (``load_weights``); ``trained_head``: a model saved without a head is an error
    rather than one with a new random head. The weights come in ``dtype`` (float32 by default) on
    ``device`` (the CPU by default). With ``max_memory`` (e.g. ``"2GiB"``) at most that much of the weights
    is placed on ``device`` (and in CPU memory), the rest offloaded to disk (``offload_folder``, default a
    temporary folder) and read back in every forward pass: accelerate's big-model loading. Masks saved
    with the model are not applied here: see ``MaskSet.load``.

    >>> model, tokenizer = load_model("minilm", glue_task("sst2"))  # doctest: +SKIP
    """
    path = resolve_model(name, flag)
    overrides = {}
    if task is not None and not task.causal_lm:
        names = task.label_names or ("score",)
        overrides = dict(
            num_labels=task.num_labels,
            id2label=dict(enumerate(names)),
            label2id={label: i for i, label in enumerate(names)},
            problem_type="regression" if task.is_regression else "single_label_classification",
        )
    config = load_config(path, flag, **overrides)
    tokenizer = load_tokenizer(path, flag)
    where = f"{flag} {name}"
    if (Path(path) / SPARSE_FILE).is_file() and max_memory:
        raise ConfigError(f"{where}: --max-memory loads safetensors weights; this model is in prunekit's sparse "
                          "format (save it with --save-format dense)")  # fmt: skip
    placement = _offloaded(max_memory, offload_folder, device) if max_memory else {}
    if (Path(path) / SPARSE_FILE).is_file():  # prunekit's compact format: rebuilt dense, bit-exact
        try:
            model = load_sparse(path, model_class(config, task))
        except Exception as err:  # truncated/corrupt file, missing tensors
            raise ModelError(f"{where}: could not load {SPARSE_FILE} ({first_line(err)})") from None
        if task is not None and not task.causal_lm and model.config.num_labels != task.num_labels:
            raise ModelError(
                f"{where}: sparse-format model has {model.config.num_labels} labels, task needs "
                f"{task.num_labels}; prune a model fine-tuned on this task"
            )
        check_finite_weights(model, where)
        model.to(dtype)
    else:
        model = load_weights(model_class(config, task), path, config, where, relabel=bool(overrides),
                             trained_head=trained_head, dtype=dtype, **placement)  # fmt: skip
    if device is not None and not placement:
        model.to(device)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def _offloaded(max_memory: str, offload_folder: str | None, device: torch.device | str | None) -> dict:
    """``from_pretrained``'s big-model loading options: ``max_memory`` on ``device`` and in CPU memory, the
    rest on disk in ``offload_folder`` (default: a temporary folder removed when the process exits)."""
    import atexit
    import shutil
    import tempfile

    device = torch.device(device or "cpu")
    budget = {"cpu": max_memory} if device.type == "cpu" else {device.index or 0: max_memory, "cpu": max_memory}
    if offload_folder is None:
        offload_folder = tempfile.mkdtemp(prefix="prunekit-offload-")
        atexit.register(shutil.rmtree, offload_folder, ignore_errors=True)
    return {"device_map": "auto", "max_memory": budget, "offload_folder": offload_folder}


HEAD_KINDS = ("ForSequenceClassification", "ForCausalLM")


def _head_kind(class_name: str) -> str | None:
    return next((kind for kind in HEAD_KINDS if class_name.endswith(kind)), None)


def load_weights(
    model_cls: type,
    path: str,
    config: PretrainedConfig,
    where: str,
    relabel: bool = False,
    trained_head: bool = False,
    new_head_from: str | None = None,
    saved_architectures: list[str] | None = None,
    **kwargs,
) -> PreTrainedModel:
    """``model_cls.from_pretrained(path)`` in float32, strictly: every tensor of the model must come from
    the checkpoint with its shape, and nothing in the checkpoint may be left over, or the error names
    the tensors. The one exception is the task head of a checkpoint saved without one (a base or a
    language model loaded as a classifier): it is new and randomly initialised, and a warning says so —
    an error with ``trained_head``. ``relabel``: a saved head of another label count is rebuilt for the
    config's labels (also said). ``new_head_from`` names where a new head's weights will come from
    instead (merge: the adapter), which silences the warning; ``saved_architectures``: the checkpoint's
    own, when ``config`` is another model's. Non-finite weights are an error too. ``kwargs`` go to
    ``from_pretrained`` (``dtype`` defaults to float32)."""
    options = {"dtype": torch.float32, **kwargs, "ignore_mismatched_sizes": relabel, "output_loading_info": True}
    try:
        model, info = model_cls.from_pretrained(path, config=config, **options)
    except Exception as err:  # safetensors, pickle and torch errors of a corrupt weights file
        files = [f for f in WEIGHT_FILES if (Path(path) / f).is_file()]
        shown = f" {files[0]}" if files else ""
        raise ModelError(f"{where}: could not load its weights{shown} ({first_line(err)})") from None
    body = model.base_model_prefix + "."
    saved = [_head_kind(name) for name in (saved_architectures or config.architectures or ())]
    new_head = _head_kind(type(model).__name__) not in saved
    missing, unexpected = sorted(info["missing_keys"]), sorted(info["unexpected_keys"])
    mismatched = sorted(key for key, *_ in info["mismatched_keys"])

    def names(keys: list[str]) -> str:
        return ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")

    files = ", ".join(f for f in WEIGHT_FILES if (Path(path) / f).is_file()) or "its weights"
    bad_missing = [key for key in missing if key.startswith(body) or not new_head]
    if bad_missing:
        raise ModelError(f"{where}: {files} lacks tensor(s) {names(bad_missing)}; the model would be partly random")
    if unexpected and not new_head:
        raise ModelError(f"{where}: {files} holds tensor(s) the model does not have: {names(unexpected)}")
    bad_shapes = [key for key in mismatched if key.startswith(body)]
    if bad_shapes:
        raise ModelError(f"{where}: {files} has tensor(s) of the wrong shape: {names(bad_shapes)}")
    head = sorted({*missing, *mismatched})
    if head and trained_head:
        raise ModelError(
            f"{where}: has no trained head for this task ({names(head)} not in {files}); "
            "fine-tune it first (prunekit finetune)"
        )
    if head and new_head_from is None:
        reason = "rebuilt for the task's labels" if mismatched and not missing else "new (the checkpoint has none)"
        logger.warning(
            "%s: the task head (%s) is %s, randomly initialised: train it before trusting its outputs",
            where, names(head), reason,
        )  # fmt: skip
    check_finite_weights(model, where)
    return model


def check_finite_weights(model: torch.nn.Module, where: str) -> None:
    """Refuse a model with NaN or infinite weights: every output it computes would be meaningless."""
    for name, tensor in model.named_parameters():
        if tensor.device.type == "meta":  # offloaded to disk: not read here
            continue
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            count = int((~torch.isfinite(tensor)).sum())
            raise ModelError(f"{where}: weight {name} has {count:,} non-finite value(s) (nan or inf)")


def task_label_names(config: PretrainedConfig) -> list[str] | None:
    """The class names a model was fine-tuned with, or None if it only has transformers' defaults."""
    id2label = config.id2label or {}
    names = [id2label[i] for i in sorted(id2label)]
    if not names or all(name == f"LABEL_{i}" for i, name in enumerate(names)):
        return None
    return names


def count_parameters(model: torch.nn.Module, folder: str | os.PathLike | None = None) -> tuple[int, int]:
    """(total, non-zero) parameter counts; tied weights are counted once. Weights offloaded to disk (on
    "meta" in the model) are counted from the checkpoint in ``folder``, one tensor at a time."""
    total = nonzero = 0
    offloaded = []
    for name, param in {id(p): (n, p) for n, p in model.named_parameters()}.values():
        total += param.numel()
        if param.device.type == "meta":
            offloaded.append(name)
        else:
            nonzero += int(torch.count_nonzero(param).item())
    if offloaded:
        from prunekit.shards import CheckpointReader

        if folder is None:
            raise ModelError("counting the weights of an offloaded model needs its folder")
        reader = CheckpointReader(folder)
        for name in offloaded:
            nonzero += int(torch.count_nonzero(reader.read([name])[name]).item())
    return total, nonzero


def weights_size_bytes(folder: str | os.PathLike) -> int:
    """Bytes of weight files on disk (safetensors / bin, shards included)."""
    folder = Path(folder)
    return sum(f.stat().st_size for f in folder.iterdir() if f.suffix in (".safetensors", ".bin") and f.is_file())


def task_of(folder: str) -> str | None:
    """The task recorded in a model folder's summary.json, if it has one."""
    import json

    try:
        return json.loads((Path(folder) / "summary.json").read_text()).get("task")
    except (OSError, ValueError):
        return None
