"""Options declared once on a config dataclass: the CLI flags, the recipe keys and the config agree."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from prunekit.errors import ConfigError
from prunekit.methods.adaptive import AdaptiveConfig
from prunekit.methods.lottery import LotteryConfig
from prunekit.methods.magnitude import MagnitudeConfig
from prunekit.methods.structured import StructuredConfig
from prunekit.options import FLAG, add_config_arguments, config_from_args, flag_name, option_fields
from prunekit.pruning.schedules import CubicSchedule
from prunekit.recipes.orders import Target, WorkflowConfig, order_recipe
from prunekit.recipes.schema import METHODS, Option
from prunekit.training.config import FinetuneConfig
from prunekit.training.distill_config import DistillConfig
from prunekit.training.lora import LoraOptions


def test_distill_flags_come_from_the_dataclass_with_its_defaults():
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, DistillConfig)
    assert config_from_args(DistillConfig, parser.parse_args([])) == DistillConfig()
    parsed = parser.parse_args(["--temperature", "4", "--hidden-loss", "cosine", "--cache-teacher"])
    config = config_from_args(DistillConfig, parsed)
    assert (config.temperature, config.hidden_loss, config.cache_teacher) == (4.0, "cosine", True)
    with pytest.raises(SystemExit):
        parser.parse_args(["--alpha-kd", "-1"])  # the field's own parser checks the range


def test_every_option_field_is_a_recipe_key_of_the_distill_stage():
    options = METHODS["distill"].options
    for field in dataclasses.fields(DistillConfig):
        if FLAG in field.metadata:
            option = options[field.name]
            assert option.flag == flag_name(field.name) and option.default == field.default
            assert option.help.startswith(field.metadata[FLAG]["help"])


@pytest.mark.parametrize("importance, scope", [("magnitude", "global"), ("wanda", "row"), ("sparsegpt", "layer")])
def test_magnitude_scope_defaults_to_the_importances_own_in_one_place(importance, scope):
    assert MagnitudeConfig(importance=importance).scope == scope
    assert MagnitudeConfig(importance=importance, scope="layer").scope == "layer"


def test_sparsegpt_refuses_a_global_ranking():
    with pytest.raises(ConfigError, match="--scope global: sparsegpt"):
        MagnitudeConfig(importance="sparsegpt", scope="global")


# every method config -> (a recipe method whose stage takes its flags, fields the command sets itself)
CONFIGS = [
    (FinetuneConfig, "finetune", ()),
    (FinetuneConfig, "distill", ()),
    (LoraOptions, "finetune", ()),
    (LoraOptions, "distill", ()),
    (MagnitudeConfig, "prune-magnitude", ()),
    (
        MagnitudeConfig,
        "finetune",
        (
            "importance",
            "block_size",
            "dampening",
            "within_layer",
            "fit_to",
            "layer_sparsity",
            "owl_threshold",
            "owl_spread",
        ),
    ),  # one-shot only
    (CubicSchedule, "finetune", ()),
    (AdaptiveConfig, "adaptive", ("scope",)),  # --scope is MagnitudeConfig's: layer means uniform
    (StructuredConfig, "prune-structured", ()),
    (LotteryConfig, "lottery", ()),
    (DistillConfig, "distill", ()),
    (Target, "compress", ()),  # compress and study ordering: commands, not recipe methods
    (WorkflowConfig, "compress", ()),
    (WorkflowConfig, "study ordering", ()),
]


def options_of(where: str) -> dict:
    """A recipe method's options, or a command's (its words) read from its parser."""
    import argparse

    from prunekit.cli import build_parser

    if where in METHODS:
        return METHODS[where].options
    parser = build_parser()
    for word in where.split():
        parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[word]
    options = {}
    for action in parser._actions:
        flag = next((f for f in action.option_strings if f.startswith("--")), None)
        if flag is None:
            continue
        switch = isinstance(action, argparse._StoreTrueAction)
        key = flag[2:].replace("-", "_")
        choices = tuple(action.choices) if action.choices is not None else None
        options[key] = Option(key, flag, action.type, choices, False if switch else action.default, switch, action.help)
    return options


@pytest.mark.parametrize("config, method, left", CONFIGS, ids=lambda v: getattr(v, "__name__", str(v)))
def test_every_config_option_is_a_flag_and_recipe_key_with_the_fields_default(config, method, left):
    """The flag, the recipe key, the default and the help all come from the dataclass field."""
    options = options_of(method)
    for field, flag, spec in option_fields(config):
        if field.name in left:
            continue
        option = options[flag[2:].replace("-", "_")]
        assert option.flag == flag
        assert option.default == (False if spec["switch"] else field.default)
        assert option.help.startswith(spec["help"])


def _construct(config, **values):
    if config is CubicSchedule:
        return config(0.5, **values)
    if config is WorkflowConfig:
        return config(Target(heads=0.5), **values)
    return config(**{**({"heads": 0.5} if config is AdaptiveConfig else {}), **values})


BAD_VALUES = [  # (config, recipe method, field, a value the flag refuses)
    (FinetuneConfig, "finetune", "lr", 0),
    (FinetuneConfig, "finetune", "epochs", "many"),
    (FinetuneConfig, "finetune", "warmup_ratio", 1.0),
    (LoraOptions, "finetune", "lora_r", 0),
    (MagnitudeConfig, "prune-magnitude", "sparsity", 1.0),
    (MagnitudeConfig, "prune-magnitude", "importance", "snip"),
    (CubicSchedule, "finetune", "every", 0),
    (AdaptiveConfig, "adaptive", "heads", 1.5),
    (AdaptiveConfig, "adaptive", "beta", 1.0),
    (StructuredConfig, "prune-structured", "round_to", 0),
    (StructuredConfig, "prune-structured", "importance", "snip"),
    (LotteryConfig, "lottery", "prune_per_round", 1.0),
    (DistillConfig, "distill", "alpha_ce", -0.5),
    (DistillConfig, "distill", "hidden_loss", "l1"),
    (WorkflowConfig, "compress", "stage_steps", 0),
    (WorkflowConfig, "compress", "lora_dropout", 1.0),
]


@pytest.mark.parametrize("config, method, name, value", BAD_VALUES)
def test_a_config_built_in_python_refuses_what_its_flag_refuses(config, method, name, value):
    """Library, command line and recipe: the same check and the same words."""
    (flag,) = [flag for field, flag, _ in option_fields(config) if field.name == name]
    key = flag[2:].replace("-", "_")
    recipe_problem = options_of(method)[key].check(value)
    assert recipe_problem is not None
    with pytest.raises(ConfigError) as error:
        _construct(config, **{name: value})
    assert str(error.value) == f"{flag} {value!r}: {recipe_problem.rsplit(', got ', 1)[0]}"
    _construct(config)  # the defaults pass the same check


def test_auto_training_lengths_resolve_from_the_data_size():
    """``--epochs auto`` / ``--stage-steps auto`` are the dataclass defaults too, made numbers per dataset."""
    finetune = FinetuneConfig().resolved(train_size=96, world_size=1)
    assert (finetune.epochs, finetune.warmup_ratio) == (10, 0.1)  # 3 steps a pass: the most passes, warm-up
    assert FinetuneConfig(epochs=2).resolved(96, world_size=1).warmup_ratio == 0.0  # asked for: no warm-up
    assert FinetuneConfig().resolved(67_349, world_size=1).epochs == 1
    workflow = WorkflowConfig(Target(heads=0.5))
    assert workflow.stage_steps == "auto" and workflow.resolved(3_667).stage_steps == 6 * 115  # MRPC: 115 a pass
    assert WorkflowConfig(Target(heads=0.5), stage_steps=40).resolved(3_667).stage_steps == 40
    with pytest.raises(ConfigError, match="stage_steps is 'auto'"):  # refused before any model is loaded
        order_recipe(workflow, {})
