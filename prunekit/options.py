"""Options declared once, on a method's config dataclass, and turned into CLI flags from there.

A field made with ``option(default, help, parse=..., choices=...)`` becomes ``--field-name`` (the
field's name with dashes) with that parser, choices, default and help; ``config_from_args`` builds
the dataclass back from the parsed flags. The recipe schema reads the same flags from the parser, so
the dataclass is the one place a default, range or help text is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable, Iterable
from typing import Any

FLAG = "prunekit_flag"

# ---------------------------------------------------------------- flag value parsers (argparse types)


def _int_at_least(low: int, what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, found {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected {what}, found {text!r}")
        return value

    return parse


positive_int = _int_at_least(1, "a positive integer")
count = _int_at_least(0, "an integer >= 0")


def seed(text: str) -> int:
    value = count(text)
    if value >= 2**32:  # numpy's seed range
        raise argparse.ArgumentTypeError(f"expected a seed in [0, 2^32), found {text!r}")
    return value


def real(low: float | None = None, high: float | None = None, low_open: bool = False, high_open: bool = False):
    """An argparse type for a finite float in a range, e.g. ``real(0, 1, high_open=True)`` for [0, 1)."""
    if low is not None and high is not None:
        what = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        what = f"a number {'>' if low_open else '>='} {low:g}"
    else:
        what = "a finite number"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, found {text!r}") from None
        ok = math.isfinite(value)
        if ok and low is not None:
            ok = value > low if low_open else value >= low
        if ok and high is not None:
            ok = value < high if high_open else value <= high
        if not ok:
            raise argparse.ArgumentTypeError(f"expected {what}, found {text!r}")
        return value

    return parse


def param_count(text: str) -> int:
    """``15000000``, ``15M``, ``1.5e7`` or ``800K`` -> an integer parameter count."""
    scale = {"K": 10**3, "M": 10**6, "B": 10**9}.get(text[-1:].upper(), 1)
    try:
        value = float(text[:-1] if scale > 1 else text) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a parameter count such as 15000000 or 15M, found {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive parameter count, found {text!r}")
    return int(value)


fraction = real(0, 1, high_open=True)  # sparsities, ratios: [0, 1)
non_negative = real(0)
positive = real(0, low_open=True)


def auto_or(parse: Callable[[str], float]) -> Callable[[str], float | str]:
    """An argparse type accepting ``auto`` besides what ``parse`` accepts."""

    def parse_or_auto(text: str) -> float | str:
        return "auto" if text == "auto" else parse(text)

    parse_or_auto.__name__ = getattr(parse, "__name__", "value")
    return parse_or_auto


# ---------------------------------------------------------------- options on dataclass fields


def option(
    default: Any,
    help: str,
    *,
    parse: Callable[[str], Any] | None = None,
    choices: Iterable | None = None,
    switch: bool = False,
) -> Any:
    """A dataclass field that is also a command-line flag (``switch``: a store_true flag)."""
    spec = {"help": help, "parse": parse, "choices": tuple(choices) if choices else None, "switch": switch}
    return dataclasses.field(default=default, metadata={FLAG: spec})


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def add_config_arguments(group: argparse._ActionsContainer, config: type) -> None:
    """Add a flag for every ``option`` field of the dataclass ``config``."""
    for field in dataclasses.fields(config):
        spec = field.metadata.get(FLAG)
        if spec is None:
            continue
        if spec["switch"]:
            group.add_argument(flag_name(field.name), action="store_true", help=spec["help"])
            continue
        default = field.default
        shown = f" (default {default})" if default is not None and "default" not in spec["help"] else ""
        group.add_argument(
            flag_name(field.name),
            type=spec["parse"],
            choices=spec["choices"],
            default=default,
            help=spec["help"] + shown,
        )


def config_from_args(config: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """The dataclass ``config`` with every ``option`` field taken from the parsed flags."""
    values = {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(config)
        if FLAG in field.metadata and hasattr(args, field.name)
    }
    return config(**{**values, **overrides})
