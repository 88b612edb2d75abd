"""chatterbox_common.settings: one field declaration makes the flag, the variable and the help text."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Literal

import pytest
from chatterbox_common import Settings, add_arguments, load_settings
from pydantic import Field

PREFIX = "EXAMPLE_"


class Example(Settings):
    size: int = Field(16, gt=0, description="How many.")
    mode: Literal["fast", "slow"] = Field("fast", description="How.")
    enabled: bool = Field(False, description="Whether.")
    directory: Path | None = Field(None, description="Where, if anywhere.")
    names: tuple[str, ...] = Field((), description="Which, comma-separated.")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_arguments(parser, Example, PREFIX, "example")
    return parser


def _load(*argv: str, **environ: str) -> Example:
    return load_settings(Example, PREFIX, _parser().parse_args(list(argv)), environ)


def test_a_flag_beats_the_environment_which_beats_the_default():
    assert _load().size == 16
    assert _load(EXAMPLE_SIZE="3").size == 3
    assert _load("--size", "5", EXAMPLE_SIZE="3").size == 5


def test_an_absent_flag_leaves_the_environment_in_force():
    settings = _load("--size", "5", EXAMPLE_MODE="slow")
    assert (settings.size, settings.mode) == (5, "slow")


def test_a_bad_value_names_its_variable_and_what_is_wrong():
    with pytest.raises(ValueError, match=r"^EXAMPLE_SIZE: Input should be greater than 0, got '0'$"):
        _load(EXAMPLE_SIZE="0")
    with pytest.raises(ValueError, match=r"^EXAMPLE_SIZE: .*valid integer"):
        _load(EXAMPLE_SIZE="many")
    with pytest.raises(ValueError, match=r"^--size \(EXAMPLE_SIZE\): Input should be greater than 0"):
        _load("--size", "-1")


def test_the_help_text_is_the_description_and_names_the_variable():
    helps = {a.dest: a.help for a in _parser()._actions if a.dest != "help"}
    assert helps == {name: f"{field.description} Environment: {PREFIX}{name.upper()}."
                     for name, field in Example.model_fields.items()}


def test_literal_choices_are_enforced_on_the_flag_and_on_the_variable():
    with pytest.raises(argparse.ArgumentError, match="invalid choice"):
        _parser().parse_args(["--mode", "medium"])
    with pytest.raises(ValueError, match="EXAMPLE_MODE: Input should be 'fast' or 'slow', got 'medium'"):
        _load(EXAMPLE_MODE="medium")


def test_booleans_take_the_usual_spellings_and_refuse_others():
    for raw in ("true", "1", "yes", "ON"):
        assert _load(EXAMPLE_ENABLED=raw).enabled is True
    for raw in ("false", "0", "no", "off"):
        assert _load(EXAMPLE_ENABLED=raw).enabled is False
    with pytest.raises(ValueError, match="EXAMPLE_ENABLED: 'maybe' is not a boolean"):
        _load(EXAMPLE_ENABLED="maybe")


def test_an_empty_optional_path_is_none_and_a_given_one_is_a_path():
    assert _load(EXAMPLE_DIRECTORY="").directory is None
    assert _load(EXAMPLE_DIRECTORY="/data").directory == Path("/data")


def test_a_tuple_is_comma_separated_with_blanks_dropped():
    assert _load(EXAMPLE_NAMES=" a, b,,c ").names == ("a", "b", "c")
    assert _load(EXAMPLE_NAMES="").names == ()


def test_a_setting_without_a_description_is_refused_when_declared():
    with pytest.raises(TypeError, match="Undocumented: settings without a description: size"):
        class Undocumented(Settings):
            size: int = 16


def test_settings_are_frozen_and_refuse_unknown_names():
    settings = _load()
    with pytest.raises(ValueError, match="frozen"):
        settings.size = 3
    with pytest.raises(ValueError, match="Extra inputs"):
        Example(sise=3)
