"""What a recipe stage may say: each method's options, read from its registered stage's config
(``prunekit.stages``).

The config's ``option`` fields are the one source of truth: a recipe key is the field's flag without
dashes (``--max-train-samples`` <-> ``max_train_samples``), with its parser, range, choices and default;
a value is checked by the very function that checks the flag, and the command's flags are generated from
the same fields. So ``prunekit finetune --help`` and a ``finetune`` stage can never disagree.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from prunekit.errors import quote
from prunekit.options import value_problem

# flags the runner sets itself (the model chain, the stage folder, resumption); a recipe never names them
RUNNER_FLAGS = {"--help", "--model", "--student", "--out", "--overwrite", "--json", "--resume", "--checkpoint-dir"}


@dataclass(frozen=True)
class Option:
    """One recipe key: its flag, how values are checked, and what ``--help`` says about it."""

    key: str
    flag: str
    parse: Callable[[str], Any] | None  # the flag's parser (None: any string)
    choices: tuple | None
    default: Any
    switch: bool  # a store_true flag: the value is a bool
    help: str | None
    hidden: bool = False  # an older spelling: accepted, not listed

    def check(self, value: Any) -> str | None:
        """Why ``value`` is not acceptable (None when it is)."""
        if self.switch:
            return None if isinstance(value, bool) else f"expected true or false, got {quote(value)}"
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            return f"expected {self.expects()}, got {quote(value)}"
        problem = value_problem(value, self.parse, self.choices)
        return None if problem is None else f"{problem}, got {quote(value)}"

    def expects(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        return "a string" if self.parse is None else "a number"

    def argv(self, value: Any) -> list[str]:
        """The command-line words for ``value`` (a switch set to false adds none, a key without flag none)."""
        if not self.flag:
            return []
        if self.switch:
            return [self.flag] if value else []
        return [self.flag, str(value)]


@dataclass(frozen=True)
class Method:
    """A recipe method: its registered stage, and the command words its record shows (``argv``: the
    command that does what the stage did, for a person to rerun by hand)."""

    name: str
    command: tuple[str, ...]  # the CLI words, e.g. ("prune", "structured")
    chain_flag: str | None = "--model"  # where the previous stage's model goes

    @property
    def stage(self):
        from prunekit.stages import STAGES

        return STAGES[self.name]

    @property
    def help(self) -> str:
        return self.stage.help

    @property
    def makes_model(self) -> bool:
        return self.stage.makes_model

    @property
    def trains(self) -> bool:
        return self.stage.trains

    @property
    def fixed(self) -> dict[str, Any]:
        """Options the method's name fixes (``lora``: ``lora: true``)."""
        return dict(self.stage.fixed)

    @functools.cached_property
    def options(self) -> dict[str, Option]:
        return {
            key: Option(key, flag, spec["parse"], spec["choices"], False if spec["switch"] else default,
                        spec["switch"], spec["help"], spec.get("hidden", False))
            for key, flag, spec, default in self.stage.options
        }  # fmt: skip

    def fixed_argv(self) -> list[str]:
        """The command-line words of the fixed options."""
        from prunekit.options import leaf_options, option_key

        specs = {option_key(flag): (flag, spec) for _, _, flag, spec in leaf_options(self.stage.config)}
        words = []
        for key, value in self.fixed.items():
            flag, spec = specs[key]
            words += Option(key, flag, spec["parse"], spec["choices"], None, spec["switch"], spec["help"]).argv(value)
        return words


# the command words of the built-in stages (a stage registered elsewhere shows its own name), in the order
# messages and `prunekit recipes` list them
COMMANDS = {
    "finetune": ("finetune",),
    "lora": ("finetune",),
    "adaptive": ("finetune",),
    "merge": ("merge",),
    "prune-magnitude": ("prune", "magnitude"),
    "prune-structured": ("prune", "structured"),
    "distill": ("distill",),
    "lottery": ("lottery",),
    "evaluate": ("evaluate",),
    "bench": ("bench",),
    "export": ("export", "onnx"),
}
CHAIN_FLAGS = {"distill": "--student", "bench": None}  # where the previous stage's model goes (default --model)


class _Methods(Mapping):
    """Every registered stage as a recipe method: the built-in ones first, then any registered since."""

    def _names(self) -> list[str]:
        from prunekit.stages import STAGES

        return [*(name for name in COMMANDS if name in STAGES), *(name for name in STAGES if name not in COMMANDS)]

    def __init__(self) -> None:
        self._made: dict[str, Method] = {}  # stages are only ever added: a method, once made, stays right

    def __getitem__(self, name: str) -> Method:
        if not isinstance(name, str) or name not in self._names():
            raise KeyError(name)
        if name not in self._made:
            self._made[name] = Method(name, COMMANDS.get(name, (name,)), CHAIN_FLAGS.get(name, "--model"))
        return self._made[name]

    def __iter__(self):
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())


METHODS: Mapping[str, Method] = _Methods()
