"""The multilingual variant offline: it loads without its Chinese segmenter and speaks other languages."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from chatterbox_predictor.chinese_text import LazyCangjieConverter
from chatterbox_predictor.engine import Engine, EngineConfig, SynthesisRequest
from chatterbox_predictor.errors import LanguageUnavailable
from chatterbox_predictor.loading import load_model
from chatterbox_predictor.sampling import SamplingParams
from chatterbox_predictor.variants import MULTILINGUAL
from chatterbox_predictor.voices import VoiceCache, VoiceLibrary


@pytest.fixture(scope="module")
def multilingual_model(random_checkpoint):
    return load_model(random_checkpoint("multilingual"), "multilingual", device="cpu")


def test_the_multilingual_model_loads_offline_with_its_chinese_step_deferred(multilingual_model):
    converter = multilingual_model.tokenizer.cangjie_converter
    assert type(multilingual_model).__name__ == "ChatterboxMultilingualTTS"
    assert isinstance(converter, LazyCangjieConverter) and converter._converter is None


def test_french_text_is_spoken_in_capped_tokens_without_building_the_chinese_step(multilingual_model,
                                                                                  tmp_path):
    config = EngineConfig.from_settings(variant="multilingual", watermark=False, warmup=False)
    voices = VoiceLibrary(tmp_path, MULTILINGUAL, "cpu", VoiceCache(2**28))
    engine = Engine(multilingual_model, config, "cpu", voices)
    request = SynthesisRequest("Bonjour, ceci est un essai.", language="fr",
                               params=SamplingParams(max_new_tokens=8), seed=3)
    chunks = list(engine.synthesize(request, threading.Event()))
    tokens = [t for c in chunks for t in c.tokens]
    audio = np.concatenate([c.audio for c in chunks])
    assert len(tokens) == 8 and len(audio) > 0 and np.isfinite(audio).all()
    assert multilingual_model.tokenizer.cangjie_converter._converter is None


def test_the_warm_up_names_a_language_so_a_multilingual_server_starts(multilingual_model, tmp_path):
    """Every multilingual request needs a language id, the start-up's own generation too (without one,
    the predictor exited at start-up, found by the browser tier)."""
    config = EngineConfig.from_settings(variant="multilingual", watermark=False)
    voices = VoiceLibrary(tmp_path, MULTILINGUAL, "cpu", VoiceCache(2**28))
    Engine(multilingual_model, config, "cpu", voices).warm_up()


def test_chinese_text_fails_with_a_typed_error_when_the_segmenter_cannot_be_loaded():
    def unreachable(model_dir):  # what spacy_pkuseg's download raises with no route to GitHub
        raise OSError("[Errno 101] Network is unreachable")

    converter = LazyCangjieConverter(None, build=unreachable)
    with pytest.raises(LanguageUnavailable, match="spacy_pkuseg") as refused:
        converter("你好")
    assert refused.value.status == 501
