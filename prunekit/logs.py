"""How prunekit's console output is set up: library logs at WARNING (INFO with ``verbose``), transformers'
own notices and per-load progress bars quiet (the Trainer's progress bar stays)."""

from __future__ import annotations

import logging
import os
import warnings


def configure_logging(verbose: bool) -> None:
    level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not verbose:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()  # per-load weight bars; the Trainer's own progress bar stays
        warnings.filterwarnings("ignore", category=FutureWarning)  # deprecation notes from inside peft/transformers
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
