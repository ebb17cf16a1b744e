"""One small error hierarchy. The CLI turns any of these into a one-line message and exit code 2."""

from __future__ import annotations


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type name if it has none), for one-line errors."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


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
