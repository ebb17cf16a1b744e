"""Options declared once, on a method's config dataclass, and turned into CLI flags from there.

A field made with ``option(default, help, parse=..., choices=...)`` becomes ``--field-name`` (or its
``flag=``) with that parser, choices, default and help; ``config_from_args`` builds the dataclass back
from the parsed flags, and ``check_options`` (called in each config's ``__post_init__``) checks a config
built in Python with the same parsers. The recipe schema reads the flags from the commands' parsers, so
the dataclass field is the one place a default, range or help text is written; ``same_option`` lets a
second config take a field's declaration instead of writing it again.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable, Iterable
from typing import Any

from prunekit.errors import ConfigError, did_you_mean

FLAG = "prunekit_flag"
SECTION = "prunekit_section"  # a field holding another option dataclass (its flags are the section's)

# ---------------------------------------------------------------- flag value parsers (argparse types)


def _int_at_least(low: int, what: str, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, found {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {what}, found {text!r}")
        return value

    return parse


positive_int = _int_at_least(1, "a positive integer")
count = _int_at_least(0, "an integer >= 0")


def int_range(low: int, high: int) -> Callable[[str], int]:
    """An argparse type for an integer in [low, high]."""
    return _int_at_least(low, f"an integer from {low} to {high}", high)


def seed(text: str) -> int:
    value = count(text)
    if value >= 2**32:  # numpy's seed range
        raise argparse.ArgumentTypeError(f"expected a seed in [0, 2^32), found {text!r}")
    return value


def seed_option() -> Any:
    """The ``--seed`` option every config that draws random numbers declares (one help, one default)."""
    return option(42, "seed of everything random in the stage: a new task head, the data order, dropout, random "
                  "scores", parse=seed)  # fmt: skip


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
    flag: str | None = None,
    hidden: bool = False,
) -> Any:
    """A dataclass field that is also a command-line flag (``switch``: a store_true flag; ``flag``: its
    name when it is not the field's name with dashes; ``hidden``: an older spelling kept working, left
    out of ``--help`` and the recipe schema)."""
    spec = {"help": help, "parse": parse, "choices": tuple(choices) if choices else None, "switch": switch,
            "flag": flag, "hidden": hidden}  # fmt: skip
    return dataclasses.field(default=default, metadata={FLAG: spec})


def same_option(config: type, name: str, **changes: Any) -> Any:
    """A field declared as the dataclass ``config``'s option ``name`` is (its flag, parser, choices, help
    and default), but for ``changes`` (e.g. ``default=1e-4, help=...``): an option shared by two configs
    is written once."""
    field = config.__dataclass_fields__[name]
    spec = {**field.metadata[FLAG], **{k: v for k, v in changes.items() if k != "default"}}
    spec["flag"] = spec["flag"] or flag_name(name)
    return dataclasses.field(default=changes.get("default", field.default), metadata={FLAG: spec})


def section(config: type) -> Any:
    """A field holding the option dataclass ``config`` (built with its defaults): its options become
    flags and keys of the dataclass that holds it — configs nest instead of copying fields."""
    return dataclasses.field(default_factory=config, metadata={SECTION: config})


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def option_key(flag: str) -> str:
    """The recipe / Python keyword of a flag: ``--calibration-samples`` -> ``calibration_samples``."""
    return flag[2:].replace("-", "_")


def leaf_options(config: Any) -> list[tuple[tuple[str, ...], dataclasses.Field, str, dict]]:
    """``(path, field, flag, spec)`` of every ``option`` field of ``config`` and of its sections, in order;
    ``path`` is the field's place, e.g. ``("calibration", "samples")``."""
    found = []
    for field in dataclasses.fields(config):
        if SECTION in field.metadata:
            found += [((field.name, *path), *rest) for path, *rest in leaf_options(field.metadata[SECTION])]
        elif FLAG in field.metadata:
            spec = field.metadata[FLAG]
            found.append(((field.name,), field, spec["flag"] or flag_name(field.name), spec))
    return found


def option_fields(config: Any) -> list[tuple[dataclasses.Field, str, dict]]:
    """``(field, flag, spec)`` of every ``option`` field of the dataclass (class or instance) ``config``."""
    return [
        (field, field.metadata[FLAG]["flag"] or flag_name(field.name), field.metadata[FLAG])
        for field in dataclasses.fields(config)
        if FLAG in field.metadata
    ]


def add_config_arguments(
    group: argparse._ActionsContainer, config: type, skip: Iterable[str] = (), only: Iterable[str] | None = None
) -> None:
    """Add a flag for every ``option`` field of the dataclass ``config`` and its sections (``only`` those
    named there) but the fields named in ``skip`` (a field's name, its dotted path in a section, or its
    option key)."""
    for path, field, flag, spec in leaf_options(config):
        names = {field.name, ".".join(path), option_key(flag)}
        if names & set(skip) or (only is not None and not names & set(only)):
            continue
        help_text = spec["help"] if spec["switch"] else option_help(field.default, spec["help"])
        help_text = argparse.SUPPRESS if spec["hidden"] else help_text
        if spec["switch"]:
            group.add_argument(flag, action=_GivenSwitch, default=field.default, help=help_text)
            continue
        group.add_argument(flag, action=_Given, type=spec["parse"], choices=spec["choices"], default=field.default,
                           help=help_text)  # fmt: skip


def option_help(default: Any, help: str) -> str:
    """What ``--help`` (and ``prunekit run --options``) says of an option: its help and its default
    (unless the help says it)."""
    shown = f" (default {default})" if default is not None and "default" not in help else ""
    return help + shown


GIVEN = "_prunekit_given"  # the Namespace attribute listing the option keys given on the command line


class _NotesGiven(argparse.Action):
    """Stores a flag's value (as its argparse base does) and notes its key as given: a default never is."""

    def __call__(self, parser, namespace, values, option_string=None):
        super().__call__(parser, namespace, values, option_string)
        given = getattr(namespace, GIVEN, None) or set()
        setattr(namespace, GIVEN, given | {self.dest})


class _Given(_NotesGiven, argparse._StoreAction):
    pass


class _GivenSwitch(_NotesGiven, argparse._StoreTrueAction):
    pass


def given_options(args: argparse.Namespace) -> set[str]:
    """The option keys given on the command line (by their flags), defaults aside."""
    return set(getattr(args, GIVEN, None) or ())


def check_effective(config: Any, given: Iterable[str]) -> None:
    """Refuse an option that was given (a key in ``given``) but has no effect in the mode ``config``
    chose: every config (and section) with an ``ineffective()`` method returns ``{key: why}`` for the
    options it would ignore, e.g. ``{"heads": "without --prune adaptive"}``."""
    given = set(given)
    for part in _parts(config):
        ignored = part.ineffective() if hasattr(part, "ineffective") else {}
        for key in sorted(given & set(ignored)):
            raise ConfigError(f"--{key.replace('_', '-')}: has no effect {ignored[key]}; leave it out")


def _parts(config: Any) -> list[Any]:
    """``config`` and every section inside it."""
    found = [config]
    for field in dataclasses.fields(config):
        if SECTION in field.metadata:
            found += _parts(getattr(config, field.name))
    return found


def unused(keys: Iterable[str], why: str) -> dict[str, str]:
    """``{key: why}`` for each of ``keys``: what an ``ineffective()`` method returns."""
    return dict.fromkeys(keys, why)


def config_from_args(config: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """The dataclass ``config`` (sections included) with every ``option`` field the parsed flags have
    taken from them; ``overrides`` set top-level fields."""
    built = _build(config, lambda field, flag: getattr(args, option_key(flag), _UNSET), overrides)
    check_effective(built, given_options(args))
    return built


_UNSET = object()


def config_from_options(
    config: type,
    options: dict[str, Any],
    owner: str | None = None,
    given: Iterable[str] | None = None,
    **overrides: Any,
) -> Any:
    """The dataclass ``config`` (sections included) from keyword options named as recipe keys
    (``calibration_samples=64``); a key it does not have is an error naming ``owner`` and the close ones,
    and so is one in ``given`` (default: every key of ``options``) that has no effect (``check_effective``)."""
    keys = {option_key(flag) for _, _, flag, _ in leaf_options(config)}
    for key in options:
        if key not in keys:
            where = owner or config.__name__
            raise ConfigError(f"{key}: not an option of {where}{did_you_mean(key, sorted(keys))}")
    built = _build(config, lambda field, flag: options.get(option_key(flag), _UNSET), overrides)
    check_effective(built, options if given is None else given)
    return built


def _build(config: type, value_of: Callable[[dataclasses.Field, str], Any], overrides: dict[str, Any]) -> Any:
    values = {}
    for field in dataclasses.fields(config):
        if SECTION in field.metadata:
            values[field.name] = _build(field.metadata[SECTION], value_of, {})
        elif FLAG in field.metadata:
            value = value_of(field, field.metadata[FLAG]["flag"] or flag_name(field.name))
            if value is not _UNSET:
                values[field.name] = value
    return config(**{**values, **overrides})


def value_problem(value: Any, parse: Callable[[str], Any] | None, choices: Iterable | None) -> str | None:
    """Why ``value`` is not acceptable to a flag of argparse type ``parse`` and ``choices`` (None: it is);
    the command line, recipes and configs built in Python all check values with this."""
    if parse is not None:
        try:
            value = parse(str(value))
        except (argparse.ArgumentTypeError, ValueError, TypeError) as err:
            return str(err).split(", found ")[0]
    if choices is not None and value not in choices:
        return f"expected one of {', '.join(map(str, choices))}"
    return None


def check_options(config: Any) -> None:
    """Check a config built in Python the way its flags are checked on the command line (``value_problem``);
    None means unset."""
    for field, flag, spec in option_fields(config):
        value = getattr(config, field.name)
        if value is None or spec["switch"]:
            continue
        problem = value_problem(value, spec["parse"], spec["choices"])
        if problem is not None:
            raise ConfigError(f"{flag} {value!r}: {problem}")
