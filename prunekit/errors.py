"""One small error hierarchy. The CLI turns any of these into a one-line message and exit code 2."""

from __future__ import annotations

import difflib
import reprlib
from typing import Any


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type name if it has none), for one-line errors."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def did_you_mean(word: str, candidates: list[str]) -> str:
    if len(word) > 64:  # nothing that long is a typo of a name, and difflib is quadratic in it
        return ""
    close = difflib.get_close_matches(word, candidates, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


_QUOTE = reprlib.Repr()
_QUOTE.maxlevel, _QUOTE.maxlist, _QUOTE.maxdict, _QUOTE.maxstring, _QUOTE.maxother = 2, 4, 4, 60, 60


def quote(value: Any) -> str:
    """A value as an error message shows it: its repr, cut short however large or deeply nested it is
    (a YAML alias bomb's repr would be gigabytes), on one line."""
    return _QUOTE.repr(value).replace("\n", "\\n")


class PrunekitError(Exception):
    """Base class: a problem with the user's input, reported without a traceback."""


class ConfigError(PrunekitError):
    """A command-line flag or config value is out of range or inconsistent."""


class DataError(PrunekitError):
    """A data file or folder is missing, malformed, or lacks an expected column."""


class ModelError(PrunekitError):
    """A model folder or name cannot be loaded."""


class UnsupportedModelError(ModelError):
    """The model's architecture has no adapter."""


class TrainingError(PrunekitError):
    """Training diverged (a NaN/inf loss or weights); nothing is saved."""


class ExportError(PrunekitError):
    """An exported model could not be built, or does not compute what the PyTorch model computes."""
