"""Recipe files: an ordered list of stages ``{name, method, ...options}``, read with ``yaml.safe_load``
and checked before anything runs. Every mistake is one line naming the file and the path inside it:
``my.yaml: stages[2].sparsity: expected a number in [0, 1), got 1.5``.

Besides a method's options a stage may say ``from`` (the stage whose model it starts from, or
``input``; default: the latest model) and ``role`` (``parent``: the dense reference of the report,
default the first stage that makes a model; ``control``: the equal-budget dense control, trained from
the input for as many steps as the stages before it took together) and ``isolated: true`` (the stage
runs in a worker process, so one that exhausts memory stops with a message instead of taking the run
down: ``prunekit.stages.worker``). A string option ``@NAME`` means
the model of the earlier stage NAME (``@input``: the run's ``--model``). ``defaults`` holds options
given to every stage whose method takes them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from prunekit.errors import ConfigError, did_you_mean, first_line, quote
from prunekit.recipes.schema import METHODS

BUILTIN_DIR = Path(__file__).parent / "builtin"
STAGE_KEYS = ("name", "method", "from", "role", "isolated")
ROLES = ("parent", "control")
TOP_KEYS = ("description", "defaults", "stages")
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
INPUT = "input"
MAX_STAGES = 1000  # a recipe longer than this is a mistake (or an attack), not a plan
MAX_NODES = 100_000  # values, lists and mappings a recipe holds once YAML aliases are expanded
MAX_BYTES = 1 << 20  # a recipe file is a few kB


@dataclass
class Stage:
    name: str
    method: str
    options: dict[str, Any] = field(default_factory=dict)  # defaults merged in
    source: str | None = None  # `from`
    role: str | None = None
    own: tuple[str, ...] = ()  # the options the stage names itself (a default that does nothing here is fine)
    isolated: bool = False  # run in a worker process

    def as_dict(self) -> dict[str, Any]:
        head = {"name": self.name, "method": self.method}
        head.update({k: v for k, v in (("from", self.source), ("role", self.role)) if v is not None})
        if self.isolated:
            head["isolated"] = True
        return {**head, **self.options}


@dataclass
class Recipe:
    stages: list[Stage]
    description: str = ""
    origin: str = ""  # the file (or built-in name) it came from, for messages
    numbered: bool = True  # stage folders NN-name; False (commands that promise DIR/final/ ...): name alone

    def folder_name(self, index: int, stage: Stage) -> str:
        """The folder of the ``index``-th stage (from 1) inside the run folder."""
        return f"{index:02d}-{stage.name}" if self.numbered else stage.name

    def as_dict(self) -> dict[str, Any]:
        return {"description": self.description, "stages": [stage.as_dict() for stage in self.stages]}

    def dump(self) -> str:
        return yaml.safe_dump(self.as_dict(), sort_keys=False, allow_unicode=True)


def _show(key: Any) -> str:
    """A key as a message shows it: plain when it is a word, else quoted (no line breaks in errors)."""
    return key if isinstance(key, str) and re.fullmatch(r"[\w@-]{1,60}", key) else quote(key)


class _RecipeLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """``yaml.safe_load`` that refuses a key given twice in one mapping (YAML would keep the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        problem=f"duplicate key {quote(key_node.value)}", problem_mark=key_node.start_mark
                    )
                seen.add(key_node.value)
        return super().construct_mapping(node, deep)


def check_size(raw: Any, origin: str) -> None:
    """Refuse a recipe that expands (YAML aliases repeat a value without copying it) past ``MAX_NODES``,
    before anything walks or prints it."""
    pending, count = [raw], 0
    while pending:
        value = pending.pop()
        count += 1
        if count > MAX_NODES:
            raise ConfigError(
                f"{origin}: holds more than {MAX_NODES:,} values once its aliases are expanded; a recipe is a few "
                "stages of options"
            )
        if isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)


def builtin_recipes() -> dict[str, Path]:
    return {path.stem: path for path in sorted(BUILTIN_DIR.glob("*.yaml"))}


def read_recipe(spec: str | dict, overrides: Sequence[str] = (), defaults: dict[str, Any] | None = None) -> Recipe:
    """A built-in recipe's name, a YAML file or a recipe as a dict, with ``--set PATH=VALUE``
    ``overrides`` and ``defaults`` (options for every stage that takes them), checked."""
    if isinstance(spec, dict):
        raw, origin = spec, "recipe"
    else:
        raw, origin = _read_file(spec), spec
    check_size(raw, origin)
    for override in overrides:
        raw = apply_override(raw, override, origin)
    if defaults:
        if not isinstance(raw, dict) or not isinstance(raw.get("defaults") or {}, dict):
            raise ConfigError(f"{origin}: its defaults is not a mapping")
        raw = {**raw, "defaults": {**(raw.get("defaults") or {}), **defaults}}
    return parse_recipe(raw, origin)


def _read_file(spec: str) -> Any:
    """The YAML of a built-in recipe's name or a file, read safely (no duplicate keys, bounded size)."""
    builtins = builtin_recipes()
    path = Path(spec)
    if spec in builtins and not path.exists():
        path = builtins[spec]
    elif path.is_dir():
        raise ConfigError(f"recipe {spec}: is a folder; expected a YAML file or a built-in recipe's name")
    elif not path.is_file():
        hint = did_you_mean(spec, list(builtins))
        raise ConfigError(f"recipe {spec}: no such file, and not a built-in recipe{hint} (prunekit recipes lists them)")
    if path.stat().st_size > MAX_BYTES:
        raise ConfigError(f"{spec}: {path.stat().st_size:,} bytes; a recipe file may hold at most {MAX_BYTES:,}")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_RecipeLoader)  # a SafeLoader
    except UnicodeDecodeError:
        raise ConfigError(f"{spec}: not a UTF-8 text file") from None
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        problem = getattr(err, "problem", None) or "not valid YAML"
        raise ConfigError(f"{spec}: not valid YAML{line}: {problem}") from None
    except (ValueError, RecursionError) as err:  # an integer of thousands of digits, nesting thousands deep
        raise ConfigError(f"{spec}: not a recipe: {first_line(err)}") from None
    return raw


def apply_override(raw: Any, override: str, origin: str) -> Any:
    """``stages[2].sparsity=0.8`` or ``defaults.seed=1``: the value is read as YAML (``0.8`` is a number).
    ``raw`` is not changed: what the override touches is copied."""
    shown = override if override.isprintable() and len(override) <= 120 else quote(override)
    path, sep, text = override.partition("=")
    match = re.fullmatch(r"(?:stages\[(\d{1,6})\]|(defaults)|(description))(?:\.([A-Za-z_][\w-]*))?", path.strip())
    if not sep or not match or (match.group(3) is None) == (match.group(4) is None):
        raise ConfigError(f"--set {shown}: expected stages[N].KEY=VALUE, defaults.KEY=VALUE or description=TEXT")
    try:
        value = yaml.load(text, Loader=_RecipeLoader)  # a SafeLoader
    except yaml.YAMLError:
        value = text  # e.g. @name (YAML reserves @): the words as typed
    except (ValueError, RecursionError) as err:
        raise ConfigError(f"--set {shown}: not a value: {first_line(err)}") from None
    check_size(value, f"--set {shown}")
    if not isinstance(raw, dict):
        return raw  # parse_recipe says what is wrong with the file
    raw = dict(raw)
    index, defaults, description, key = match.groups()
    if description:
        raw["description"] = value
    elif defaults:
        if not isinstance(raw.get("defaults") or {}, dict):
            raise ConfigError(f"--set {shown}: {origin}'s defaults is not a mapping")
        raw["defaults"] = {**(raw.get("defaults") or {}), key: value}
    else:
        stages = raw.get("stages")
        if not isinstance(stages, list) or int(index) >= len(stages) or not isinstance(stages[int(index)], dict):
            count = len(stages) if isinstance(stages, list) else 0
            raise ConfigError(f"--set {shown}: {origin} has {count} stage(s), numbered from 0")
        raw["stages"] = list(stages)
        raw["stages"][int(index)] = {**stages[int(index)], key: value}
    return raw


def parse_recipe(raw: Any, origin: str) -> Recipe:
    def fail(where: str, message: str) -> ConfigError:
        return ConfigError(f"{origin}: {where}: {message}" if where else f"{origin}: {message}")

    check_size(raw, origin)
    if not isinstance(raw, dict):
        raise fail("", f"expected a mapping with a 'stages' list, got {type(raw).__name__}")
    for key in raw:
        if key not in TOP_KEYS:
            hint = did_you_mean(str(key), list(TOP_KEYS))
            raise fail(_show(key), f"unknown key{hint}; expected {', '.join(TOP_KEYS)}")
    description = raw.get("description") or ""
    if not isinstance(description, str):
        raise fail("description", f"expected a string, got {quote(description)}")
    defaults = raw.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise fail("defaults", f"expected a mapping of options, got {quote(defaults)}")
    known = {key for method in METHODS.values() for key in method.options}
    for key, value in defaults.items():
        if not isinstance(key, str) or key not in known:
            raise fail(f"defaults.{_show(key)}", f"not an option of any method{did_you_mean(str(key), sorted(known))}")
        problems = {m.options[key].check(value) for m in METHODS.values() if key in m.options}
        if None not in problems:
            raise fail(f"defaults.{key}", sorted(problems)[0])
    stages_raw = raw.get("stages")
    if not isinstance(stages_raw, list) or not stages_raw:
        raise fail("stages", f"expected a non-empty list of stages, got {quote(stages_raw)}")
    if len(stages_raw) > MAX_STAGES:
        raise fail("stages", f"{len(stages_raw):,} stages; a recipe may have at most {MAX_STAGES:,}")
    seen = _Earlier()
    stages: list[Stage] = []
    for index, entry in enumerate(stages_raw):
        stage = _parse_stage(entry, f"stages[{index}]", defaults, seen, fail)
        stages.append(stage)
        seen.add(stage)
    control = [stage for stage in stages if stage.role == "control"]
    parent = [stage for stage in stages if stage.role == "parent"]
    if len(control) > 1 or len(parent) > 1:
        role = "control" if len(control) > 1 else "parent"
        raise fail("stages", f"more than one stage has role: {role}")
    return Recipe(stages, description, origin)


class _Earlier:
    """The stages validated so far: their names, and which of them make a model (kept as they come, so
    validation stays linear in the number of stages)."""

    def __init__(self) -> None:
        self.names: set[str] = set()
        self.models: list[str] = []
        self.model_set: set[str] = set()

    def add(self, stage: Stage) -> None:
        self.names.add(stage.name)
        if METHODS[stage.method].makes_model:
            self.models.append(stage.name)
            self.model_set.add(stage.name)

    def made(self) -> str:
        shown = ", ".join(self.models[-8:]) if self.models else "none yet"
        more = f"{len(self.models) - 8} more, " if len(self.models) > 8 else ""
        return f"an earlier stage that makes a model ({more}{shown})"


def _parse_stage(entry: Any, where: str, defaults: dict, earlier: _Earlier, fail) -> Stage:
    if not isinstance(entry, dict):
        raise fail(where, f"expected a mapping with name and method, got {quote(entry)}")
    name, method_name = entry.get("name"), entry.get("method")
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise fail(f"{where}.name", f"expected a short lowercase name (letters, digits, - or _), got {quote(name)}")
    if name == INPUT or name in earlier.names:
        raise fail(f"{where}.name", f"{name!r} is taken (names are unique; 'input' is the run's --model)")
    if not isinstance(method_name, str) or method_name not in METHODS:
        hint = did_you_mean(method_name, list(METHODS)) if isinstance(method_name, str) else ""
        raise fail(f"{where}.method", f"expected one of {', '.join(METHODS)}, got {quote(method_name)}{hint}")
    method = METHODS[method_name]
    source = entry.get("from")
    if source is not None and source != INPUT and not (isinstance(source, str) and source in earlier.model_set):
        raise fail(f"{where}.from", f"expected 'input' or {earlier.made()}, got {quote(source)}")
    isolated = entry.get("isolated", False)
    if not isinstance(isolated, bool):
        raise fail(f"{where}.isolated", f"expected true or false, got {quote(isolated)}")
    role = entry.get("role")
    if role is not None and role not in ROLES:
        raise fail(f"{where}.role", f"expected one of {', '.join(ROLES)}, got {quote(role)}")
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
        if not isinstance(key, str) or key not in method.options:
            hint = did_you_mean(str(key), [*method.options, *STAGE_KEYS])
            raise fail(f"{where}.{_show(key)}", f"not an option of method {method_name}{hint}")
        if value is None:
            options.pop(key, None)
            continue
        if isinstance(value, str) and value.startswith("@"):
            ref = value[1:]
            if ref != INPUT and ref not in earlier.model_set:
                raise fail(f"{where}.{key}", f"{_show(value)}: expected @input or @ {earlier.made()}")
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
    own = tuple(key for key in entry if key in options and key not in STAGE_KEYS)
    return Stage(name, method_name, options, source, role, own, isolated)
