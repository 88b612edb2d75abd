"""Random-weight checkpoints of the real architecture load through the library's own from_local."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from chatterbox_predictor.backbones import MARKER_FILE, SMALL_LAYERS
from chatterbox_predictor.loading import CheckpointError, load_model
from chatterbox_predictor.random_checkpoint import REFERENCE_SECONDS, synthetic_reference
from chatterbox_predictor.variants import ENGLISH, TURBO, get_variant
from tests.support.chatterbox import capped_speech_tokens

SAMPLES_PER_TOKEN = 960  # S3Gen: 25 speech tokens a second at 24 kHz
TURBO_SILENCE_TOKENS = 3  # ChatterboxTurboTTS.generate appends three silence tokens


def _layers(model) -> int:
    cfg = model.t3.cfg
    return cfg.n_layer if model.t3.is_gpt else cfg.num_hidden_layers


@pytest.mark.parametrize("variant", ["turbo", "english"])
def test_checkpoint_holds_exactly_the_files_from_local_reads(random_checkpoint, variant):
    directory = random_checkpoint(variant)
    v = get_variant(variant)
    present = sorted(p.name for p in directory.iterdir())
    assert present == sorted({*v.required_files, v.builtin_voice, MARKER_FILE})


def test_small_turbo_checkpoint_speaks_a_capped_number_of_tokens(random_checkpoint):
    model = load_model(random_checkpoint("turbo"), "turbo", device="cpu")
    assert type(model).__name__ == "ChatterboxTurboTTS"
    assert _layers(model) == SMALL_LAYERS and model.t3.cfg.hidden_size == 1024
    assert len(model.tokenizer) == 50276

    torch.manual_seed(0)
    with capped_speech_tokens(model, 6):
        wav = model.generate("Hello there, this is a test.")
    assert wav.dtype == torch.float32 and wav.shape[0] == 1
    # At most the cap (fewer when special tokens are dropped), plus three silence tokens.
    n_tokens = wav.shape[1] // SAMPLES_PER_TOKEN - TURBO_SILENCE_TOKENS
    assert wav.shape[1] % SAMPLES_PER_TOKEN == 0 and 1 <= n_tokens <= 6
    assert torch.isfinite(wav).all() and wav.abs().max() > 0


def test_small_english_checkpoint_speaks_a_capped_number_of_tokens_with_cfg(random_checkpoint):
    model = load_model(random_checkpoint("english"), "english", device="cpu")
    assert type(model).__name__ == "ChatterboxTTS"
    assert _layers(model) == SMALL_LAYERS

    torch.manual_seed(0)
    with capped_speech_tokens(model, 6):
        wav = model.generate("Hello there, this is a test.", cfg_weight=0.5, exaggeration=0.5)
    assert wav.shape[0] == 1 and 0 < wav.shape[1] <= 7 * SAMPLES_PER_TOKEN
    assert torch.isfinite(wav).all()


def test_capped_generation_is_reproducible_with_a_seed(random_checkpoint):
    model = load_model(random_checkpoint("turbo"), "turbo", device="cpu")
    runs = []
    for _ in range(2):
        torch.manual_seed(1234)
        with capped_speech_tokens(model, 4):
            runs.append(model.t3.inference_turbo(model.conds.t3, model.tokenizer(
                "Same seed, same tokens.", return_tensors="pt").input_ids))
    assert torch.equal(runs[0], runs[1])


def test_builtin_voice_is_a_weights_only_conditionals(random_checkpoint):
    path = random_checkpoint("turbo") / TURBO.builtin_voice
    data = torch.load(path, map_location="cpu", weights_only=True)
    assert set(data) == {"t3", "gen"}
    assert data["t3"]["speaker_emb"].shape == (1, 256)
    # 25 speech tokens a second of reference (Turbo keeps up to 375, 15 s); 50 mel frames a second.
    tokens = int(REFERENCE_SECONDS * 25)
    assert data["t3"]["cond_prompt_speech_tokens"].shape == (1, tokens)
    assert data["gen"]["prompt_token"].shape == (1, tokens)
    assert data["gen"]["prompt_feat"].shape == (1, 2 * tokens, 80)
    assert data["gen"]["embedding"].shape == (1, 192)


def test_models_are_built_with_the_perth_watermarker_and_it_marks_audio(random_checkpoint):
    import perth

    # resemble-perth swallows its import errors and leaves PerthImplicitWatermarker None (it imports
    # pkg_resources, gone from setuptools >= 81): then every Chatterbox constructor fails.
    assert perth.PerthImplicitWatermarker is not None
    model = load_model(random_checkpoint("turbo"), "turbo", device="cpu")
    assert isinstance(model.watermarker, perth.PerthImplicitWatermarker)
    clip = synthetic_reference(3.0)
    marked = model.watermarker.apply_watermark(clip, sample_rate=model.sr)
    assert model.watermarker.get_watermark(clip, model.sr) == 0.0
    assert model.watermarker.get_watermark(marked, model.sr) == 1.0
    assert not np.allclose(clip, marked)


def test_a_directory_missing_files_is_refused_with_their_names(tmp_path):
    (tmp_path / ENGLISH.t3_weights).write_bytes(b"")
    with pytest.raises(CheckpointError) as refused:
        load_model(tmp_path, "english")
    message = str(refused.value)
    assert "ve.safetensors" in message and "s3gen.safetensors" in message
    assert ENGLISH.t3_weights not in message.split("missing")[1]


def test_a_random_checkpoint_of_another_variant_is_refused(random_checkpoint):
    with pytest.raises(CheckpointError, match="random turbo checkpoint, not english"):
        load_model(random_checkpoint("turbo"), "english")


@pytest.mark.slow
@pytest.mark.parametrize(("variant", "layers"), [("turbo", 24), ("english", 30)])
def test_full_size_checkpoint_loads_the_real_shapes_and_speaks(random_checkpoint, variant, layers):
    model = load_model(random_checkpoint(variant, "full"), variant, device="cpu")
    assert _layers(model) == layers and model.t3.cfg.hidden_size == 1024
    torch.manual_seed(0)
    with capped_speech_tokens(model, 3):
        wav = model.generate("Full size.")
    assert wav.shape[1] > 0 and torch.isfinite(wav).all()
