"""Continuous batching on small random checkpoints: a request's tokens and audio in a batch are the ones
it gets alone under the same seed, whoever joins or leaves around it, and the worker batches the
requests that arrive together."""

from __future__ import annotations

import asyncio
import dataclasses
import threading

import numpy as np
import pytest

from chatterbox_predictor import engine as engine_module
from chatterbox_predictor.engine import Engine, EngineConfig, SynthesisRequest
from chatterbox_predictor.loading import load_model
from chatterbox_predictor.sampling import SamplingParams
from chatterbox_predictor.t3_stream import T3Batch
from chatterbox_predictor.variants import get_variant
from chatterbox_predictor.voices import VoiceCache, VoiceLibrary
from tests.support.chatterbox import decode_together, snr_db

# Texts of different lengths (so prefills differ), two of them with two sentences (a piece ends and the
# next one's row joins at the end of the batch), and token caps that end the rows at different steps
# (rows leave from the middle of the batch and the later ones move down).
TEXTS = ["Hello there, this is a test.", "A second, somewhat longer sentence. And then a short one.",
         "Third.", "Number four is here, with more words in it than the others. It ends here."]
CAPS = [30, 24, 40, 18]


@pytest.fixture(scope="module")
def engines(random_checkpoint, tmp_path_factory):
    built = {}

    def get(variant: str) -> Engine:
        if variant not in built:
            model = load_model(random_checkpoint(variant), variant, device="cpu")
            config = EngineConfig.from_settings(variant=variant, watermark=False, warmup=False,
                                                queue_size=8, max_batch_size=4)
            voices = VoiceLibrary(tmp_path_factory.mktemp("voices"), get_variant(variant), "cpu",
                                  VoiceCache(2**28))
            built[variant] = Engine(model, config, "cpu", voices)
        return built[variant]

    return get


# Every variant's rows batch (guided pairs of cache rows, the multilingual alignment probe per row); the
# slower English and Multilingual S3Gen makes their runs long, so the later tests keep to fewer.
@pytest.fixture(params=["turbo", "english", "multilingual"])
def engine(request, engines):
    return engines(request.param)


@pytest.fixture(params=["turbo", "english"])
def engine_two(request, engines):
    return engines(request.param)


def _requests(engine: Engine) -> list[SynthesisRequest]:
    language = "fr" if engine.variant.needs_language else None
    return [SynthesisRequest(text, params=SamplingParams(max_new_tokens=cap), seed=10 + i, language=language)
            for i, (text, cap) in enumerate(zip(TEXTS, CAPS, strict=True))]


def _alone(engine: Engine, request: SynthesisRequest) -> list:
    return list(engine.synthesize(request, threading.Event()))


class _ForwardLog:
    """Records the slots and input width of every batched forward (wraps the real one)."""

    def __init__(self, monkeypatch):
        self.calls: list[tuple[int, int]] = []
        real = T3Batch._forward

        def spy(batch, group, inputs):
            self.calls.append((sum(r.slots for r in group), max(inputs[r].shape[1] for r in group)))
            return real(batch, group, inputs)

        monkeypatch.setattr(T3Batch, "_forward", spy)


def test_a_request_in_a_changing_batch_gets_the_tokens_and_audio_it_gets_alone(engine, monkeypatch):
    requests = _requests(engine)
    alone = [_alone(engine, r) for r in requests]
    forwards = _ForwardLog(monkeypatch)
    together = decode_together(engine, requests, join_every=3)  # a request joins every third step
    # Measured on these checkpoints: every token and sample agrees (the batched forward's float32
    # reductions per row come out bitwise the same as alone on this CPU).
    for i, chunks in enumerate(together):
        assert [t for c in chunks for t in c.tokens] == [t for c in alone[i] for t in c.tokens]
        assert [c.piece for c in chunks] == [c.piece for c in alone[i]]
        assert all(np.array_equal(a.audio, b.audio) for a, b in zip(chunks, alone[i], strict=True))
    assert max(slots for slots, _ in forwards.calls) >= 3 * (2 if engine.variant.guided else 1)
    # Joiners' prefills ran beside decoding rows (split off when padding would cost more than it saves).
    assert any(width > 1 for _, width in forwards.calls) and any(width == 1 for _, width in forwards.calls)


def test_prefills_share_the_forward_when_padding_costs_little(engine_two, monkeypatch):
    """Requests that join together prefill in one forward; their tokens are still their own."""
    engine = engine_two
    requests = [dataclasses.replace(r, text="Same length text.") for r in _requests(engine)[:3]]
    alone = [_alone(engine, r) for r in requests]
    forwards = _ForwardLog(monkeypatch)
    together = decode_together(engine, requests)
    assert forwards.calls[0][0] == 3 * (2 if engine.variant.guided else 1) and forwards.calls[0][1] > 1
    for i in range(3):
        assert [t for c in together[i] for t in c.tokens] == [t for c in alone[i] for t in c.tokens]


def test_chunks_due_at_the_same_step_share_one_flow_pass_and_keep_their_audio(engines, monkeypatch):
    """Turbo requests that join together reach their chunk boundaries at the same steps with windows of
    one shape, so each boundary's S3Gen flow passes run as one batch (the third request stops earlier:
    the batch shrinks). Only the floating-point order of the batched pass differs from alone: measured
    130-131 dB from each request's audio alone, against a floor of 100. (English batches the same way
    where passes have one shape; on its small random checkpoint these three requests' first passes did
    not, and ran one by one.)"""
    engine = engines("turbo")
    requests = [dataclasses.replace(r, text="Same length text.", params=SamplingParams(max_new_tokens=cap))
                for r, cap in zip(_requests(engine)[:3], (30, 30, 12), strict=True)]
    alone = [_alone(engine, r) for r in requests]
    passes = []
    real_flow = engine_module.flow_mels
    monkeypatch.setattr(engine_module, "flow_mels",
                        lambda flow, inputs: (passes.append(len(inputs)), real_flow(flow, inputs))[1])
    together = decode_together(engine, requests)
    # At 10 tokens all three; at 12 the third one's last chunk; at 30 the others' last.
    assert passes == [3, 1, 2]
    for got, expected in zip(together, alone, strict=True):
        assert [t for c in got for t in c.tokens] == [t for c in expected for t in c.tokens]
        assert [len(c.audio) for c in got] == [len(c.audio) for c in expected]
        snr = snr_db(np.concatenate([c.audio for c in got]), np.concatenate([c.audio for c in expected]))
        assert snr >= 100.0


def test_the_worker_batches_concurrent_requests_and_a_leaving_client_does_not_disturb_the_others(
        engines, monkeypatch):
    engine = engines("turbo")
    requests = _requests(engine)
    alone = [_alone(engine, r) for r in requests]
    sizes = []
    real_step = T3Batch.step
    monkeypatch.setattr(T3Batch, "step", lambda batch: (sizes.append(len(batch.rows)), real_step(batch))[1])
    long = SynthesisRequest("Leaves early.", params=SamplingParams(max_new_tokens=400), seed=3,
                            language=requests[0].language)

    async def run():
        async def collect(request):
            return [chunk async for chunk in engine.stream(request)]

        async def leave_after_one_chunk():
            stream = engine.stream(long)
            await stream.__anext__()
            await stream.aclose()

        return await asyncio.gather(*(collect(r) for r in requests), leave_after_one_chunk())

    engine.start()
    try:
        *results, _ = asyncio.run(run())
    finally:
        engine.stop()
    assert max(sizes) == engine.config.max_batch_size  # four at once, the fifth waited for a place
    for got, expected in zip(results, alone, strict=True):
        assert [t for c in got for t in c.tokens] == [t for c in expected for t in c.tokens]
    assert engine.active == 0
