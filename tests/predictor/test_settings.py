"""PredictorSettings: flags, then CHATTERBOX_* environment variables, then defaults.

The mechanism itself (chatterbox_common.settings) is tested in tests/shared; these pin down the
predictor's own declarations.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from chatterbox_predictor.settings import PredictorSettings


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    PredictorSettings.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_defaults_serve_turbo_on_the_best_device_from_the_hub():
    settings = PredictorSettings.load(_parse(), environ={})
    assert (settings.variant, settings.device, settings.checkpoint_dir, settings.random_weights) == \
        ("turbo", "auto", None, "")


def test_a_flag_wins_over_the_environment_which_wins_over_the_default():
    environ = {"CHATTERBOX_VARIANT": "english", "CHATTERBOX_CHECKPOINT_DIR": "/from/env"}
    settings = PredictorSettings.load(_parse("--checkpoint_dir", "/from/flag"), environ=environ)
    assert settings.variant == "english"
    assert settings.checkpoint_dir == Path("/from/flag")


def test_an_empty_checkpoint_dir_variable_means_none():
    settings = PredictorSettings.load(_parse(), environ={"CHATTERBOX_CHECKPOINT_DIR": ""})
    assert settings.checkpoint_dir is None


def test_an_environment_value_outside_the_choices_is_refused_by_name():
    with pytest.raises(ValueError, match="^CHATTERBOX_DEVICE: Input should be 'auto', 'cuda' or 'cpu', "
                                         "got 'tpu'$"):
        PredictorSettings.load(_parse(), environ={"CHATTERBOX_DEVICE": "tpu"})


def test_every_setting_has_a_flag_with_help_naming_its_variable():
    parser = argparse.ArgumentParser()
    PredictorSettings.add_arguments(parser)
    helps = {a.dest: a.help for a in parser._actions if a.dest != "help"}
    assert set(helps) == set(PredictorSettings.model_fields)
    for name in PredictorSettings.model_fields:
        assert helps[name].endswith(f" Environment: CHATTERBOX_{name.upper()}.")


def test_typed_settings_parse_their_values_and_name_the_variable_when_they_cannot():
    settings = PredictorSettings.load(_parse("--queue_size", "3"), environ={
        "CHATTERBOX_WATERMARK": "false", "CHATTERBOX_VOICE_SCAN_INTERVAL": "0.5",
        "CHATTERBOX_VOICES_DIR": "/data/voices"})
    assert (settings.queue_size, settings.watermark, settings.voice_scan_interval, settings.voices_dir) == \
        (3, False, 0.5, Path("/data/voices"))
    with pytest.raises(ValueError, match="CHATTERBOX_QUEUE_SIZE"):
        PredictorSettings.load(_parse("--queue_size", "0"), environ={})
    with pytest.raises(ValueError, match="CHATTERBOX_WATERMARK"):
        PredictorSettings.load(_parse(), environ={"CHATTERBOX_WATERMARK": "maybe"})


def test_open_metrics_is_off_unless_a_flag_or_a_variable_turns_it_on():
    assert PredictorSettings.load(_parse(), environ={}).open_metrics is False
    assert PredictorSettings.load(_parse("--open_metrics", "true"), environ={}).open_metrics is True
    assert PredictorSettings.load(_parse(), environ={"CHATTERBOX_OPEN_METRICS": "yes"}).open_metrics is True


def test_the_choices_come_from_the_variant_and_size_registries():
    parser = argparse.ArgumentParser()
    PredictorSettings.add_arguments(parser)
    choices = {a.dest: a.choices for a in parser._actions}
    assert choices["variant"] == ("turbo", "english", "multilingual")
    assert choices["random_weights"] == ("", "small", "full")
    with pytest.raises(ValueError, match="CHATTERBOX_RANDOM_WEIGHTS"):
        PredictorSettings.load(_parse(), environ={"CHATTERBOX_RANDOM_WEIGHTS": "huge"})


def test_settings_are_frozen_and_the_module_imports_neither_torch_nor_kserve():
    import subprocess
    import sys

    settings = PredictorSettings.load(_parse(), environ={})
    with pytest.raises(ValueError, match="frozen"):
        settings.queue_size = 1
    code = ("import sys, chatterbox_predictor.settings; "
            "heavy = {'torch', 'kserve'} & set(sys.modules); assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_checkpoint_comes_from_the_flag_then_kserves_mount_then_the_image_then_the_hub(tmp_path):
    """The first complete directory wins: a storage initializer's /mnt/models over a checkpoint baked
    into the image (Dockerfile.predictor's CHECKPOINT_DIR), and a partial one is passed over."""
    from chatterbox_predictor.checkpoints import resolve_checkpoint
    from chatterbox_predictor.variants import get_variant

    turbo = get_variant("turbo")
    mounted, baked, explicit = tmp_path / "mnt-models", tmp_path / "baked", tmp_path / "explicit"
    for directory in (mounted, baked):
        directory.mkdir()
        for name in turbo.required_files:
            (directory / name).write_bytes(b"")
    dirs = (mounted, baked)
    settings = PredictorSettings.load(environ={"CHATTERBOX_MODEL_CACHE_DIR": str(tmp_path / "cache")})
    assert resolve_checkpoint(settings, dirs) == mounted
    assert resolve_checkpoint(settings.model_copy(update={"checkpoint_dir": explicit}), dirs) == explicit
    (mounted / turbo.required_files[0]).unlink()  # a half-finished download is no checkpoint
    assert resolve_checkpoint(settings, dirs) == baked
