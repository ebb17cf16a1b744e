"""Options declared once on a config dataclass: the CLI flags, the recipe keys and the config agree."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from prunekit.errors import ConfigError
from prunekit.methods.magnitude import MagnitudeConfig
from prunekit.options import FLAG, add_config_arguments, config_from_args, flag_name
from prunekit.recipes.schema import METHODS
from prunekit.training.distill_config import DistillConfig


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
