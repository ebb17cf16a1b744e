"""What a recipe stage may say: each method's options, read from the CLI parser of the command it runs.

The command's argparse definition is the one source of truth: a recipe key is the long flag without
dashes (``--max-train-samples`` <-> ``max_train_samples``), with the flag's type, range, choices and
default; a value is checked by the very function that checks the flag. So ``prunekit finetune --help``
and a ``finetune`` stage can never disagree.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
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
    parse: Callable[[str], Any] | None  # the flag's argparse type (None: any string)
    choices: tuple | None
    default: Any
    switch: bool  # a store_true flag: the value is a bool
    help: str | None

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
    """A recipe method: the command it runs and what it fixes or adds."""

    name: str
    command: tuple[str, ...]  # the CLI words, e.g. ("prune", "structured")
    help: str
    fixed: dict[str, tuple[str, ...]] = field(default_factory=dict)  # key -> the flags the method implies
    chain_flag: str | None = "--model"  # where the previous stage's model goes
    makes_model: bool = True  # its stage folder is a model the next stage starts from
    extra: tuple[Option, ...] = ()  # keys the runner adds (export's format)
    omit: frozenset[str] = frozenset()  # command flags this method does not take

    @property
    def trains(self) -> bool:
        return self.command[0] in ("finetune", "distill", "lottery")

    @functools.cached_property
    def options(self) -> dict[str, Option]:
        found = {option.key: option for option in _command_options(self.command)}
        for key in (*self.fixed, *self.omit):
            found.pop(key, None)
        return {**found, **{option.key: option for option in self.extra}}


def _format_option() -> Option:
    return Option(
        "format",
        "",
        None,
        ("onnx", "hf"),
        "onnx",
        False,
        "onnx: an ONNX graph checked against PyTorch; hf: a copy of the model folder",
    )


# flags of `prunekit bench` a bench stage does not take: it times every model of the run, forward passes
_BENCH_OMIT = frozenset({"vs", "generate", "prompt_len", "new_tokens"})

METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("finetune", ("finetune",), "fine-tune every weight (optionally pruning gradually: prune: magnitude)"),
        Method(
            "lora", ("finetune",), "train LoRA adapters on the frozen model, then merge them", {"lora": ("--lora",)}
        ),
        Method(
            "adaptive",
            ("finetune",),
            "fine-tune while scoring and removing heads and FFN neurons",
            {"prune": ("--prune", "adaptive")},
        ),
        Method("merge", ("merge",), "merge a LoRA adapter (default: the previous stage's adapter/) into its base"),
        Method(
            "prune-magnitude", ("prune", "magnitude"), "one-shot unstructured pruning (magnitude, Wanda, SparseGPT)"
        ),
        Method("prune-structured", ("prune", "structured"), "one-shot removal of heads, FFN neurons, layers"),
        Method(
            "distill",
            ("distill",),
            "train the previous stage's model (the student) on a teacher's soft targets",
            chain_flag="--student",
        ),
        Method("lottery", ("lottery",), "iterative magnitude pruning with rewinding; the winning ticket goes on"),
        Method("evaluate", ("evaluate",), "evaluate the current model", makes_model=False),
        Method(
            "bench",
            ("bench",),
            "time every model of the run interleaved, against the parent and the control",
            chain_flag=None,
            makes_model=False,
            omit=_BENCH_OMIT,
        ),
        Method(
            "export",
            ("export", "onnx"),
            "export the current model (format: onnx or hf)",
            makes_model=False,
            extra=(_format_option(),),
        ),
    )
}


def _command_options(command: tuple[str, ...]) -> list[Option]:
    parser = _subparser(command)
    options = []
    for action in parser._actions:
        longs = [flag for flag in action.option_strings if flag.startswith("--")]
        if not longs or longs[0] in RUNNER_FLAGS:
            continue
        flag = longs[0]
        switch = isinstance(action, argparse._StoreTrueAction)
        options.append(
            Option(
                key=flag[2:].replace("-", "_"),
                flag=flag,
                parse=action.type,
                choices=tuple(action.choices) if action.choices is not None else None,
                default=False if switch else action.default,
                switch=switch,
                help=action.help,
            )
        )
    return options


@functools.cache
def _subparser(command: tuple[str, ...]) -> argparse.ArgumentParser:
    from prunekit.cli import build_parser

    parser = build_parser()
    for word in command:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[word]
    return parser
