"""The Perth watermark on streamed audio, checked with the library's own detector (`get_watermark`)."""

from __future__ import annotations

import threading

import librosa
import numpy as np
import perth
import pytest

from chatterbox_predictor.engine import Engine, EngineConfig, SynthesisRequest
from chatterbox_predictor.loading import load_model
from chatterbox_predictor.sampling import SamplingParams
from chatterbox_predictor.speech import SAMPLE_RATE
from chatterbox_predictor.stream_plan import TURBO_PLAN
from chatterbox_predictor.variants import TURBO
from chatterbox_predictor.voices import VoiceCache, VoiceLibrary
from chatterbox_predictor.watermark import StreamWatermark
from tests.support import speech

TOKEN_SAMPLES = 960


@pytest.fixture(scope="module")
def watermarker():
    return perth.PerthImplicitWatermarker()


@pytest.fixture(scope="module")
def spoken(tmp_path_factory) -> np.ndarray:
    """9 s of espeak-ng speech at 24 kHz, cut to whole speech tokens."""
    speech.ensure_espeak()
    voice, wpm, pitch, text = speech.SPEAKERS[0]
    path = speech.espeak(tmp_path_factory.mktemp("wm") / "a.wav", text, voice, wpm, pitch)
    samples, rate = speech.read(path)
    samples = librosa.resample(samples, orig_sr=rate, target_sr=SAMPLE_RATE).astype(np.float32)
    return samples[:len(samples) - len(samples) % TOKEN_SAMPLES]


def _chunks(samples: np.ndarray) -> list[np.ndarray]:
    """Cut as Turbo's stream plan cuts a piece (10, 20, 40, 80, then 100 tokens)."""
    bounds = TURBO_PLAN.bounds()
    out, start = [], 0
    while start < len(samples):
        end = next(bounds) * TOKEN_SAMPLES
        out.append(samples[start:end])
        start = end
    return out


def _score(watermarker, samples: np.ndarray) -> float:
    """The detector's mean over the signal (1: watermarked throughout)."""
    return float(np.mean(watermarker.get_watermark(samples, sample_rate=SAMPLE_RATE, round=False)))


def _at_joins(signal: np.ndarray, joins, radius: int) -> np.ndarray:
    near = np.zeros(len(signal), dtype=bool)
    for j in joins:
        near[max(0, j - radius):j + radius] = True
    return near


def _curvature_at_joins(signal: np.ndarray, joins) -> float:
    """Mean over the joins of the largest second difference within two samples: a click is a kink."""
    kink = np.abs(np.diff(signal, 2))
    return float(np.mean([kink[j - 3:j + 2].max() for j in joins]))


def test_a_streamed_watermark_is_the_whole_utterance_one_with_no_clicks_at_the_joins(watermarker, spoken):
    chunks = _chunks(spoken)
    joins = np.cumsum([len(c) for c in chunks])[:-1]
    whole = watermarker.apply_watermark(spoken, sample_rate=SAMPLE_RATE)
    naive = np.concatenate([watermarker.apply_watermark(c, sample_rate=SAMPLE_RATE) for c in chunks])
    stream = StreamWatermark(watermarker, SAMPLE_RATE)
    streamed = np.concatenate([stream.push(c, final=i == len(chunks) - 1) for i, c in enumerate(chunks)])
    assert len(whole) == len(naive) == len(streamed) == len(spoken)
    near = _at_joins(spoken, joins, radius=240)

    def rms(x):
        return float(np.sqrt(np.mean(x**2)))

    # Measured: each chunk watermarked alone departs from the whole-utterance watermark by 0.011 rms
    # within 10 ms of a join against 0.0006 elsewhere, and the kinks at the joins grow from 0.030 (clean
    # speech) to 0.051; with 120 ms of context each side, both differences are ~1e-5 and the kinks 0.031.
    naive_near, naive_far = rms((naive - whole)[near]), rms((naive - whole)[~near])
    assert naive_near > 5 * naive_far
    assert _curvature_at_joins(naive, joins) > 1.3 * _curvature_at_joins(whole, joins)
    assert rms((streamed - whole)[near]) < 1e-3 and rms((streamed - whole)[~near]) < 1e-3
    assert _curvature_at_joins(streamed, joins) < 1.05 * _curvature_at_joins(whole, joins)
    # The detector: clean speech scores near 0, every watermarked version 1.
    print(f"detector: clean {_score(watermarker, spoken):.3f}, whole {_score(watermarker, whole):.3f}, "
          f"per chunk {_score(watermarker, naive):.3f}, streamed {_score(watermarker, streamed):.3f}")
    assert _score(watermarker, spoken) < 0.2
    assert min(_score(watermarker, x) for x in (whole, naive, streamed)) > 0.95


def test_the_held_back_audio_comes_out_with_the_pieces_last_chunk(watermarker):
    stream = StreamWatermark(watermarker, SAMPLE_RATE)
    first = stream.push(np.zeros(2 * TOKEN_SAMPLES, dtype=np.float32), final=False)
    assert len(first) == 0  # shorter than what is held back: nothing yet
    rest = stream.push(np.zeros(10 * TOKEN_SAMPLES, dtype=np.float32), final=True)
    assert len(rest) == 12 * TOKEN_SAMPLES


@pytest.fixture(scope="module")
def engine(random_checkpoint, tmp_path_factory):
    model = load_model(random_checkpoint("turbo"), "turbo", device="cpu")
    voices = VoiceLibrary(tmp_path_factory.mktemp("voices"), TURBO, "cpu", VoiceCache(2**28))
    return Engine(model, EngineConfig.from_settings(warmup=False), "cpu", voices)


def test_the_detector_finds_the_watermark_in_a_streamed_response_as_in_a_one_shot_one(engine, watermarker):
    def audio(stream: bool, watermark: bool = True) -> np.ndarray:
        request = SynthesisRequest("One sentence. And then another one, a little longer.",
                                   params=SamplingParams(max_new_tokens=90), seed=4, stream=stream)
        chosen = engine if watermark else Engine(engine.model, EngineConfig.from_settings(
            warmup=False, watermark=False), "cpu", engine.voices)
        chunks = list(chosen.synthesize(request, threading.Event()))
        return np.concatenate([c.audio for c in chunks]), len(chunks)

    streamed, n_streamed = audio(stream=True)
    one_shot, n_one_shot = audio(stream=False)
    clean, _ = audio(stream=True, watermark=False)
    assert n_streamed > n_one_shot and len(streamed) == len(one_shot) == len(clean)
    scores = {name: _score(watermarker, x) for name, x in
              (("clean", clean), ("one-shot", one_shot), ("streamed", streamed))}
    print("detector on the engine's audio (random weights):", scores)
    assert scores["streamed"] > 0.95 and scores["one-shot"] > 0.95 and scores["clean"] < 0.5
