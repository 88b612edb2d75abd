"""Helpers for driving the chatterbox library itself in tests and benchmarks."""

from __future__ import annotations

import contextlib
import functools

import numpy as np


def snr_db(signal: np.ndarray, reference: np.ndarray) -> float:
    """How far `signal` is from `reference`: the reference's energy over the difference's, in dB."""
    return float(10 * np.log10(np.sum(reference**2) / np.sum((signal - reference) ** 2)))


@contextlib.contextmanager
def capped_speech_tokens(model, limit: int):
    """Makes the library's own `generate()` stop after `limit` speech tokens.

    Random weights never emit end-of-speech, and the library hard-codes its cap (1000 tokens), so the
    T3 inference method that `generate()` calls is wrapped with the smaller cap while the block runs.
    """
    from chatterbox.tts_turbo import ChatterboxTurboTTS

    turbo = isinstance(model, ChatterboxTurboTTS)
    name, keyword = ("inference_turbo", "max_gen_len") if turbo else ("inference", "max_new_tokens")
    # inference_turbo samples one token before its loop of max_gen_len steps: limit - 1 steps.
    cap = limit - 1 if turbo else limit
    original = getattr(model.t3, name)

    @functools.wraps(original)
    def capped(*args, **kwargs):  # generate() passes its own cap as a keyword: override it
        kwargs[keyword] = min(kwargs.get(keyword) or cap, cap)
        return original(*args, **kwargs)

    setattr(model.t3, name, capped)
    try:
        yield
    finally:
        setattr(model.t3, name, original)


def decode_together(engine, requests, join_every: int = 0) -> list[list]:
    """Each request's chunks when the engine's `Batcher` decodes them together on this thread: all
    joining at the first step, or one every `join_every` steps while the others decode. A request's
    error fails the call."""
    from chatterbox_predictor.engine import Batcher, Synthesis

    batcher, index, chunks = Batcher(engine.model.t3), {}, [[] for _ in requests]
    waiting, step = list(enumerate(requests)), 0
    while waiting or batcher.active:
        while waiting and (not join_every or step % join_every == 0):
            i, request = waiting.pop(0)
            synthesis = Synthesis(engine, request)
            index[synthesis] = i
            batcher.add(synthesis)
            if join_every:
                break
        for synthesis, chunk in batcher.step():
            if isinstance(chunk, BaseException):
                raise chunk
            if chunk is not None:
                chunks[index[synthesis]].append(chunk)
        step += 1
    return chunks
