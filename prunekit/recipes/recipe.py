"""Recipe files: an ordered list of stages ``{name, method, ...options}``, read with ``yaml.safe_load``
and checked before anything runs. Every mistake is one line naming the file and the path inside it:
``my.yaml: stages[2].sparsity: expected a number in [0, 1), got 1.5``.

Besides a method's options a stage may say ``from`` (the stage whose model it starts from, or
``input``; default: the latest model) and ``role`` (``parent``: the dense reference of the report,
default the first stage that makes a model; ``control``: the equal-budget dense control, trained from
the input for as many steps as the stages before it took together). A string option ``@NAME`` means
the model of the earlier stage NAME (``@input``: the run's ``--model``). ``defaults`` holds options
given to every stage whose method takes them.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from prunekit.errors import ConfigError
from prunekit.recipes.schema import METHODS, did_you_mean

BUILTIN_DIR = Path(__file__).parent / "builtin"
STAGE_KEYS = ("name", "method", "from", "role")
ROLES = ("parent", "control")
TOP_KEYS = ("description", "defaults", "stages")
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
INPUT = "input"


@dataclass
class Stage:
    name: str
    method: str
    options: dict[str, Any] = field(default_factory=dict)  # defaults merged in
    source: str | None = None  # `from`
    role: str | None = None

    def as_dict(self) -> dict[str, Any]:
        head = {"name": self.name, "method": self.method}
        head.update({k: v for k, v in (("from", self.source), ("role", self.role)) if v is not None})
        return {**head, **self.options}


@dataclass
class Recipe:
    stages: list[Stage]
    description: str = ""
    origin: str = ""  # the file (or built-in name) it came from, for messages

    def as_dict(self) -> dict[str, Any]:
        return {"description": self.description, "stages": [stage.as_dict() for stage in self.stages]}

    def dump(self) -> str:
        return yaml.safe_dump(self.as_dict(), sort_keys=False, allow_unicode=True)


def parent_name(model_stages: list[tuple[str, str | None]]) -> str | None:
    """The run's dense reference among its ``(name, role)`` model-making stages, in order: the stage with
    ``role: parent``, else the first."""
    return next((name for name, role in model_stages if role == "parent"), model_stages[0][0] if model_stages else None)


def _show(key: Any) -> str:
    """A key as a message shows it: plain when it is a word, else quoted (no line breaks in errors)."""
    return key if isinstance(key, str) and re.fullmatch(r"[\w@-]+", key) else repr(key)


def builtin_recipes() -> dict[str, Path]:
    return {path.stem: path for path in sorted(BUILTIN_DIR.glob("*.yaml"))}


def read_recipe(spec: str, overrides: list[str] = ()) -> Recipe:
    """A built-in recipe's name or a YAML file, with ``--set PATH=VALUE`` ``overrides``, checked."""
    builtins = builtin_recipes()
    path = Path(spec)
    if spec in builtins and not path.exists():
        path = builtins[spec]
    elif not path.is_file():
        hint = did_you_mean(spec, list(builtins))
        raise ConfigError(f"recipe {spec}: no such file, and not a built-in recipe{hint} (prunekit recipes lists them)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{spec}: not a UTF-8 text file") from None
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        problem = getattr(err, "problem", None) or "not valid YAML"
        raise ConfigError(f"{spec}: not valid YAML{line}: {problem}") from None
    for override in overrides:
        raw = apply_override(raw, override, spec)
    return parse_recipe(raw, spec)


def apply_override(raw: Any, override: str, origin: str) -> Any:
    """``stages[2].sparsity=0.8`` or ``defaults.seed=1``: the value is read as YAML (``0.8`` is a number)."""
    shown = override if override.isprintable() else repr(override)
    path, sep, text = override.partition("=")
    match = re.fullmatch(r"(?:stages\[(\d+)\]|(defaults)|(description))(?:\.([A-Za-z_][\w-]*))?", path.strip())
    if not sep or not match or (match.group(3) is None) == (match.group(4) is None):
        raise ConfigError(f"--set {shown}: expected stages[N].KEY=VALUE, defaults.KEY=VALUE or description=TEXT")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text  # e.g. @name (YAML reserves @): the words as typed
    raw = copy.deepcopy(raw) if isinstance(raw, dict) else raw
    if not isinstance(raw, dict):
        return raw  # parse_recipe says what is wrong with the file
    index, defaults, description, key = match.groups()
    if description:
        raw["description"] = value
    elif defaults:
        if not isinstance(raw.setdefault("defaults", {}), dict):
            raise ConfigError(f"--set {shown}: {origin}'s defaults is not a mapping")
        raw["defaults"][key] = value
    else:
        stages = raw.get("stages")
        if not isinstance(stages, list) or int(index) >= len(stages) or not isinstance(stages[int(index)], dict):
            count = len(stages) if isinstance(stages, list) else 0
            raise ConfigError(f"--set {shown}: {origin} has {count} stage(s), numbered from 0")
        stages[int(index)][key] = value
    return raw


def parse_recipe(raw: Any, origin: str) -> Recipe:
    def fail(where: str, message: str) -> ConfigError:
        return ConfigError(f"{origin}: {where}: {message}" if where else f"{origin}: {message}")

    if not isinstance(raw, dict):
        raise fail("", f"expected a mapping with a 'stages' list, got {type(raw).__name__}")
    for key in raw:
        if key not in TOP_KEYS:
            hint = did_you_mean(str(key), list(TOP_KEYS))
            raise fail(_show(key), f"unknown key{hint}; expected {', '.join(TOP_KEYS)}")
    description = raw.get("description") or ""
    if not isinstance(description, str):
        raise fail("description", f"expected a string, got {description!r}")
    defaults = raw.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise fail("defaults", f"expected a mapping of options, got {defaults!r}")
    known = {key for method in METHODS.values() for key in method.options}
    for key, value in defaults.items():
        if str(key) not in known:
            raise fail(f"defaults.{_show(key)}", f"not an option of any method{did_you_mean(str(key), sorted(known))}")
        problems = {m.options[key].check(value) for m in METHODS.values() if key in m.options}
        if None not in problems:
            raise fail(f"defaults.{key}", sorted(problems)[0])
    stages_raw = raw.get("stages")
    if not isinstance(stages_raw, list) or not stages_raw:
        raise fail("stages", f"expected a non-empty list of stages, got {stages_raw!r}")
    stages: list[Stage] = []
    for index, entry in enumerate(stages_raw):
        stages.append(_parse_stage(entry, f"stages[{index}]", defaults, stages, fail))
    control = [stage for stage in stages if stage.role == "control"]
    parent = [stage for stage in stages if stage.role == "parent"]
    if len(control) > 1 or len(parent) > 1:
        role = "control" if len(control) > 1 else "parent"
        raise fail("stages", f"more than one stage has role: {role}")
    return Recipe(stages, description, origin)


def _parse_stage(entry: Any, where: str, defaults: dict, earlier: list[Stage], fail) -> Stage:
    if not isinstance(entry, dict):
        raise fail(where, f"expected a mapping with name and method, got {entry!r}")
    name, method_name = entry.get("name"), entry.get("method")
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise fail(f"{where}.name", f"expected a short lowercase name (letters, digits, - or _), got {name!r}")
    if name == INPUT or name in {stage.name for stage in earlier}:
        raise fail(f"{where}.name", f"{name!r} is taken (names are unique; 'input' is the run's --model)")
    if method_name not in METHODS:
        hint = did_you_mean(str(method_name), list(METHODS))
        raise fail(f"{where}.method", f"expected one of {', '.join(METHODS)}, got {method_name!r}{hint}")
    method = METHODS[method_name]
    names = [stage.name for stage in earlier if METHODS[stage.method].makes_model]
    made = f"an earlier stage that makes a model ({', '.join(names) or 'none yet'})"
    source = entry.get("from")
    if source is not None and source != INPUT and source not in names:
        raise fail(
            f"{where}.from",
            f"expected 'input' or {made}, got {source!r}",
        )
    role = entry.get("role")
    if role is not None and role not in ROLES:
        raise fail(f"{where}.role", f"expected one of {', '.join(ROLES)}, got {role!r}")
    if role is not None and not method.makes_model:
        raise fail(f"{where}.role", f"a {method_name} stage makes no model, so it cannot be the {role}")
    if role == "control" and method_name not in ("finetune", "lora"):
        raise fail(f"{where}.role", "the equal-budget control is a dense fine-tune: method finetune or lora")
    # timing and export settings are their own: a training batch size is not a timing batch size
    shared = {} if method_name in ("bench", "export") else defaults
    options = {key: value for key, value in shared.items() if key in method.options}
    for key, value in entry.items():
        if key in STAGE_KEYS:
            continue
        key = str(key)
        if key not in method.options:
            hint = did_you_mean(key, [*method.options, *STAGE_KEYS])
            raise fail(f"{where}.{_show(key)}", f"not an option of method {method_name}{hint}")
        if value is None:
            options.pop(key, None)
            continue
        if isinstance(value, str) and value.startswith("@"):
            ref = value[1:]
            if ref != INPUT and ref not in names:
                raise fail(
                    f"{where}.{key}",
                    f"{value}: expected @input or @ {made}",
                )
        else:
            problem = method.options[key].check(value)
            if problem:
                raise fail(f"{where}.{key}", problem)
        options[key] = value
    if method_name == "export" and options.get("format") == "hf":
        onnx_only = sorted(set(options) - {"format"})
        if onnx_only:
            raise fail(f"{where}.{onnx_only[0]}", "only with format: onnx")
    if method_name == "distill" and "teacher" not in options:
        raise fail(where, "a distill stage needs teacher: (e.g. teacher: '@finetune')")
    return Stage(name, method_name, options, source, role)
