"""The engine on a small random checkpoint: the library's sampling, streaming, seeds and the worker."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from chatterbox_predictor.engine import Engine, EngineConfig, SynthesisRequest
from chatterbox_predictor.errors import (
    EngineNotReady,
    GenerationFailed,
    InvalidInput,
    QueueFull,
    VoiceNotFound,
)
from chatterbox_predictor.loading import load_model
from chatterbox_predictor.sampling import SamplingParams
from chatterbox_predictor.speech import SILENCE_TOKEN, SpeechStream
from chatterbox_predictor.stream_plan import TURBO_PLAN, StreamPlan
from chatterbox_predictor.t3_stream import (
    ConditioningPrefix,
    SlotCache,
    T3Batch,
    T3Row,
    T3Stream,
    _SlotLayer,
    with_exaggeration,
)
from chatterbox_predictor.variants import MULTILINGUAL, TURBO, get_variant
from chatterbox_predictor.voices import VoiceCache, VoiceLibrary
from tests.support.chatterbox import snr_db

# Measured streamed-vs-one-shot SNR on the small random Turbo checkpoint (its S3Gen is full size): 26.5 dB
# for the waveform, whatever the flow window (HiFT's random excitation noise differs between chunked and
# whole-utterance vocoding, and random vocoder weights barely follow the mels). The mels tell the flow
# window apart: 19.7 dB streaming with the whole prompt and history, 18.7 dB with the default window
# (3 s of prompt, 1 s of context), against a one-shot decode with the whole prompt. On the small English
# checkpoint (10-step flow with guidance) its own plan's windows give 17.4 dB. Floors sit just under.
SNR_FLOOR_DB = 25.0
MEL_SNR_FLOOR_DB = {("turbo", "window"): 18.0, ("turbo", "whole"): 19.0, ("english", "window"): 16.5}


@pytest.fixture(scope="module")
def turbo_model(random_checkpoint):
    return load_model(random_checkpoint("turbo"), "turbo", device="cpu")


@pytest.fixture(scope="module")
def english_model(random_checkpoint):
    return load_model(random_checkpoint("english"), "english", device="cpu")


@pytest.fixture(scope="module")
def engine(turbo_model, tmp_path_factory):
    config = EngineConfig.from_settings(watermark=False, queue_size=1, warmup=False)
    return Engine(turbo_model, config, "cpu", _library(tmp_path_factory.mktemp("voices")))


def _library(directory, variant=TURBO) -> VoiceLibrary:
    return VoiceLibrary(directory, variant, "cpu", VoiceCache(2**28))


def _run(engine: Engine, request: SynthesisRequest):
    return list(engine.synthesize(request, threading.Event()))


def _library_text_tokens(model, variant: str, text: str) -> torch.Tensor:
    """Text tokens as the library's generate() builds them for T3 (start and stop tokens around)."""
    if variant == "turbo":
        return model.tokenizer(text, return_tensors="pt").input_ids
    hp = model.t3.hp
    ids = model.tokenizer.text_to_tokens(text, **({"language_id": "fr"} if variant == "multilingual" else {}))
    return F.pad(F.pad(ids, (1, 0), value=hp.start_text_token), (0, 1), value=hp.stop_text_token)


def _library_tokens(model, variant: str, tokens: torch.Tensor, cap: int, **sampling) -> list[int]:
    """The library's T3 tokens under seed 7, end-of-speech included when it stops before `cap`."""
    torch.manual_seed(7)
    if variant == "turbo":
        return model.t3.inference_turbo(model.conds.t3, tokens, max_gen_len=cap - 1)[0].tolist()
    defaults = get_variant(variant).sampling_defaults  # what the library's generate() passes
    names = ("cfg_weight", "min_p", "top_p", "temperature", "repetition_penalty")
    settings = {name: getattr(defaults, name) for name in names} | sampling
    cond = with_exaggeration(model.conds.t3, 0.5)
    both = torch.cat([tokens, tokens])  # the library's batch of two for guidance
    return model.t3.inference(t3_cond=cond, text_tokens=both, max_new_tokens=cap, **settings)[0].tolist()


def _our_tokens(model, variant: str, tokens: torch.Tensor, params: SamplingParams, prefix: bool):
    cond = with_exaggeration(model.conds.t3, 0.5)
    stream = T3Stream(model.t3, get_variant(variant), cond, tokens, params, torch.Generator().manual_seed(7),
                      ConditioningPrefix.compute(model.t3, cond) if prefix else None)
    return list(iter(stream.next_token, None)), stream


# French short enough that, within 12 tokens, the multilingual alignment estimate reaches the end of the
# text (its end-of-speech suppression lifts and its after-the-end sums start).
TEXTS = {"turbo": "Hello there, this is a test.", "english": "Hello there, this is a test.",
         "multilingual": "Oui."}


@pytest.mark.parametrize("prefix", [False, True], ids=["prefill", "cached-prefix"])
@pytest.mark.parametrize("variant", ["turbo", "english", "multilingual"])
def test_our_token_loop_draws_the_library_tokens_under_the_same_seed(random_checkpoint, variant, prefix):
    model = load_model(random_checkpoint(variant), variant, device="cpu")
    tokens = _library_text_tokens(model, variant, TEXTS[variant])
    # Ours first: the library's multilingual inference switches the whole backbone to eager attention
    # for good, and ours must match it while still on SDPA, as in production.
    params = SamplingParams().resolved(get_variant(variant).sampling_defaults, 12)
    ours, stream = _our_tokens(model, variant, tokens, params, prefix)
    library = _library_tokens(model, variant, tokens, 12)
    assert ours == library and len(ours) == 12
    if variant == "multilingual":
        analyzer = model.t3.patched_model.alignment_stream_analyzer
        guard = stream.alignment
        assert (guard.position, guard.complete) == (int(analyzer.text_position), bool(analyzer.complete))
        assert guard.complete and not guard.forced


@pytest.mark.parametrize("prefix", [False, True], ids=["prefill", "cached-prefix"])
def test_multilingual_speech_ends_where_the_library_alignment_control_forces_it(random_checkpoint, prefix):
    model = load_model(random_checkpoint("multilingual"), "multilingual", device="cpu")
    tokens = _library_text_tokens(model, "multilingual", "Bonjour, ceci est un essai.")
    # Near-greedy with no repetition penalty, random weights soon repeat a token, which the alignment
    # control answers by forcing end of speech (random weights never choose it by themselves).
    sampling = dict(temperature=0.05, repetition_penalty=1.0)
    params = SamplingParams(**sampling).resolved(MULTILINGUAL.sampling_defaults, 12)
    ours, stream = _our_tokens(model, "multilingual", tokens, params, prefix)
    library = _library_tokens(model, "multilingual", tokens, 12, **sampling)
    assert library[-1] == model.t3.hp.stop_speech_token and ours == library[:-1] and len(ours) < 12
    assert stream.alignment.forced and stream.done


def test_the_slot_cache_holds_each_slots_own_sequence_across_regrowth_and_moves():
    """Two slots at different lengths take steps of several positions (padded for the shorter input)
    and outgrow the buffer; each slot's written positions hold exactly its own keys and values."""
    cache = SlotCache(num_layers=1)
    layer = cache.layers[0]
    own = [[torch.randn(1, 2, 3, 4)], [torch.randn(1, 2, 300, 4)]]  # slot 1 starts past the reserve
    layer.write(0, own[0][0], -own[0][0])
    layer.write(1, own[1][0], -own[1][0])
    lengths = torch.tensor([3, 300])
    for new in (5, 1, 1, 250, 1):  # 551 + padding outgrows the 300 + 256 first allocation
        step = torch.randn(2, 2, new, 4)
        cache.plan(0, lengths, new)
        keys, values = layer.update(step, -step)
        assert keys.shape[2] == int(lengths.max()) + new
        for slot in (0, 1):
            own[slot].append(step[slot:slot + 1])
        lengths = lengths + new
    for slot in (0, 1):
        expected = torch.cat(own[slot], dim=2)[0]
        assert torch.equal(layer._k[slot, :, :int(lengths[slot])], expected)
        assert torch.equal(layer._v[slot, :, :int(lengths[slot])], -expected)
    cache.move(1, 0, 1, int(lengths[1]))  # slot 0 leaves: slot 1 takes its place
    assert torch.equal(layer._k[0, :, :int(lengths[1])], torch.cat(own[1], dim=2)[0])


def test_rows_that_join_together_grow_the_cache_once_and_one_leaving_before_its_step_is_forgotten(
        turbo_model, monkeypatch):
    """Requests arriving together used to grow (allocate, zero, copy) every layer's cache once per row
    before their first step; their prefixes are now written at the step, after one growth."""
    cond = with_exaggeration(turbo_model.conds.t3, 0.5)
    prefix = ConditioningPrefix.compute(turbo_model.t3, cond)
    tokens = _library_text_tokens(turbo_model, "turbo", TEXTS["turbo"])

    def row(seed):
        params = SamplingParams().resolved(TURBO.sampling_defaults, 4)
        return T3Row(turbo_model.t3, TURBO, cond, tokens, params, torch.Generator().manual_seed(seed), prefix)

    def alone(seed):
        batch, r = T3Batch(turbo_model.t3), row(seed)
        batch.add(r)
        return [batch.step()[r] for _ in range(3)]

    growths = []
    grow = _SlotLayer.reserve

    def counted(layer, slots, length, like):
        before = layer._k
        grow(layer, slots, length, like)
        if layer._k is not before:
            growths.append(layer._k.shape[0])
    monkeypatch.setattr(_SlotLayer, "reserve", counted)
    batch, rows = T3Batch(turbo_model.t3), [row(seed) for seed in (1, 2, 3, 4)]
    for r in rows:
        batch.add(r)
    batch.remove(rows[1])  # its client left before the first step
    drawn = {r: [] for r in rows}
    for _ in range(3):
        for r, token in batch.step().items():
            drawn[r].append(token)
    layers = turbo_model.t3.tfmr.config.num_hidden_layers
    assert growths == [3] * layers  # one growth a layer, to the three rows left
    monkeypatch.undo()
    for r, seed in zip(rows, (1, 2, 3, 4), strict=True):
        if r is not rows[1]:
            assert drawn[r] == alone(seed)
    assert drawn[rows[1]] == []


def test_the_conditioning_prefix_is_computed_once_per_voice_and_exaggeration(engine):
    engine._prefixes.clear()
    request = SynthesisRequest("Cached.", params=SamplingParams(max_new_tokens=8), seed=1)
    first = _run(engine, request)
    assert len(engine._prefixes) == 1
    (_, prefix), = engine._prefixes.values()
    again = _run(engine, request)
    assert len(engine._prefixes) == 1 and next(iter(engine._prefixes.values()))[1] is prefix
    assert all(np.array_equal(a.audio, b.audio) for a, b in zip(first, again, strict=True))
    other = SamplingParams(max_new_tokens=8, exaggeration=0.9)
    _run(engine, SynthesisRequest("Cached.", params=other, seed=1))
    assert len(engine._prefixes) == 2


def test_turbo_chunks_start_small_and_double_up_to_the_largest():
    bounds = TURBO_PLAN.bounds()
    assert [next(bounds) for _ in range(7)] == [10, 30, 70, 150, 250, 350, 450]


def test_english_and_multilingual_chunks_grow_faster_and_start_with_a_short_prompt():
    plan = EngineConfig.from_settings(variant="english").plan
    assert plan is MULTILINGUAL.stream_plan and EngineConfig.from_settings().plan is TURBO_PLAN
    bounds = plan.bounds()
    assert [next(bounds) for _ in range(7)] == [10, 50, 130, 290, 490, 690, 890]
    assert plan.first_prompt_tokens < plan.prompt_tokens


def test_chunks_arrive_in_order_small_first_and_timed(engine):
    chunks = _run(engine, SynthesisRequest("Hello there, this is a test.",
                                           params=SamplingParams(max_new_tokens=60), seed=5))
    assert [c.index for c in chunks] == list(range(len(chunks))) and len(chunks) >= 3
    assert [len(c.tokens) for c in chunks] == [10, 20, 30]  # bounds 10, 30, then the cap at 60
    starts = np.cumsum([0] + [c.duration_s for c in chunks[:-1]])
    assert np.allclose([c.start_s for c in chunks], starts)
    assert chunks[0].duration_s < chunks[1].duration_s
    assert all(a.elapsed_s < b.elapsed_s for a, b in zip(chunks, chunks[1:], strict=False))
    assert all(c.sample_rate == 24_000 and c.audio.dtype == np.float32 for c in chunks)
    # 60 tokens and 3 silence tokens are 63 * 40 ms of audio.
    assert sum(len(c.audio) for c in chunks) == 63 * 960
    assert len(chunks[0].pcm16()) == 2 * len(chunks[0].audio)


def test_a_later_text_piece_goes_on_with_the_chunk_sizes_the_request_reached(engine):
    sentence = "This sentence is long enough that two of them make more than one text piece, " * 2
    text = f"{sentence.strip()}. {sentence.strip()}."
    chunks = _run(engine, SynthesisRequest(text, params=SamplingParams(max_new_tokens=40), seed=5))
    # Piece 0: bounds 10 and 30, then the cap at 40; piece 1 starts at the plan's fourth size (80), so
    # its 40 tokens are one chunk rather than 10, 20 and 10 again.
    assert [(c.piece, len(c.tokens)) for c in chunks] == [(0, 10), (0, 20), (0, 10), (1, 40)]


def test_streamed_audio_matches_a_one_shot_decode_of_the_same_tokens(engine, turbo_model):
    chunks = _run(engine, SynthesisRequest("A longer sentence to stream in several chunks.",
                                           params=SamplingParams(max_new_tokens=80), seed=11))
    tokens = [t for c in chunks for t in c.tokens]
    streamed = np.concatenate([c.audio for c in chunks])
    one_shot = SpeechStream(turbo_model.s3gen, turbo_model.conds.gen, meanflow=True, seed=11).decode(
        tokens, final=True).numpy()
    assert streamed.shape == one_shot.shape
    snr = snr_db(streamed, one_shot)
    print(f"streamed vs one-shot SNR: {snr:.1f} dB over {len(chunks)} chunks")
    assert snr >= SNR_FLOOR_DB


@pytest.mark.parametrize(("variant", "window"), [("turbo", "window"), ("turbo", "whole"),
                                                   ("english", "window")])
def test_streamed_mels_match_a_one_shot_decode_with_the_whole_prompt(request, variant, window):
    model = request.getfixturevalue(f"{variant}_model")
    plan, meanflow = get_variant(variant).stream_plan, get_variant(variant).meanflow
    windows = {"prompt_tokens": plan.prompt_tokens, "first_prompt_tokens": plan.first_prompt_tokens,
               "context_tokens": plan.context_tokens} if window == "window" else {}
    tokens = torch.randint(0, 6561, (80,), generator=torch.Generator().manual_seed(3)).tolist()
    stream = SpeechStream(model.s3gen, model.conds.gen, meanflow=meanflow, seed=11, **windows)
    spoken = []
    original = stream.vocode
    stream.vocode = lambda mels, final, right=None: (spoken.append(mels), original(mels, final, right))[1]
    passes = 1
    for bound in plan.bounds():
        if bound >= len(tokens):
            break
        stream.decode(tokens[:bound], final=False)
        passes += 1
    stream.decode(tokens, final=True)
    streamed = torch.cat(spoken, dim=2)
    one_shot = SpeechStream(model.s3gen, model.conds.gen, meanflow=meanflow, seed=11).mels(
        tokens + [SILENCE_TOKEN] * 3)
    assert streamed.shape == one_shot.shape and len(spoken) == passes == (4 if meanflow else 3)
    snr = snr_db(streamed.numpy(), one_shot.numpy())
    print(f"streamed mels ({variant}, {window}) vs one-shot: {snr:.1f} dB")
    assert snr >= MEL_SNR_FLOOR_DB[variant, window]


def test_the_same_seed_gives_the_same_tokens_streamed_or_not_and_the_same_audio_again(engine):
    def request(stream: bool) -> SynthesisRequest:
        return SynthesisRequest("Same seed, same speech.", params=SamplingParams(max_new_tokens=40),
                                seed=1234, stream=stream)

    streamed, again = _run(engine, request(True)), _run(engine, request(True))
    whole = _run(engine, request(False))
    tokens = [t for c in streamed for t in c.tokens]
    assert tokens == [t for c in whole for t in c.tokens] and len(whole) == 1
    assert all(np.array_equal(a.audio, b.audio) for a, b in zip(streamed, again, strict=True))
    other = _run(engine, SynthesisRequest("Same seed, same speech.", params=SamplingParams(max_new_tokens=40),
                                          seed=4321))
    assert [t for c in other for t in c.tokens] != tokens


def test_the_watermark_is_on_by_default_and_changes_the_audio(turbo_model, engine):
    marked = Engine(turbo_model, EngineConfig.from_settings(warmup=False), "cpu", engine.voices)
    assert marked.config.watermark is True
    request = SynthesisRequest("Watermarked.", params=SamplingParams(max_new_tokens=20), seed=3)
    plain = np.concatenate([c.audio for c in _run(engine, request)])
    stamped = np.concatenate([c.audio for c in _run(marked, request)])
    assert plain.shape == stamped.shape and not np.allclose(plain, stamped)


def test_cancelling_stops_the_generation_before_another_chunk(engine):
    cancelled = threading.Event()
    chunks = engine.synthesize(SynthesisRequest("Cancel me.", params=SamplingParams(max_new_tokens=500),
                                                seed=2), cancelled)
    first = next(chunks)
    cancelled.set()
    assert list(chunks) == [] and first.index == 0


@pytest.mark.parametrize(("request_", "error"), [
    (SynthesisRequest("", seed=1), InvalidInput),
    (SynthesisRequest("Hi.", voice_id="nobody", seed=1), VoiceNotFound),
    (SynthesisRequest("Hi.", params=SamplingParams(temperature=0), seed=1), InvalidInput),
])
def test_bad_requests_fail_with_typed_errors(engine, request_, error):
    with pytest.raises(error):
        _run(engine, request_)


@pytest.mark.parametrize("batch", [1, 2])
def test_the_worker_streams_survives_failures_refuses_beyond_its_queue_and_frees_on_cancel(turbo_model,
                                                                                          engine, batch):
    worker = Engine(turbo_model, dataclasses.replace(engine.config, max_batch_size=batch), "cpu",
                    engine.voices)
    worker.start()
    try:
        asyncio.run(_exercise_worker(worker, batch))
    finally:
        worker.stop()


async def _collect(worker: Engine, request: SynthesisRequest) -> list:
    return [chunk async for chunk in worker.stream(request)]


async def _wait_until(predicate, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def _exercise_worker(worker: Engine, batch: int) -> None:
    short = SynthesisRequest("Short.", params=SamplingParams(max_new_tokens=12), seed=1)
    assert len(await _collect(worker, short)) >= 1

    # A failing request comes back as its error; the worker goes on serving.
    with pytest.raises(VoiceNotFound):
        await _collect(worker, SynthesisRequest("Hi.", voice_id="nobody"))
    worker.voice = lambda voice_id: (_ for _ in ()).throw(RuntimeError("device fell over"))
    try:
        with pytest.raises(GenerationFailed, match="device fell over"):
            await _collect(worker, short)
    finally:
        del worker.voice  # back to the class's method
    assert len(await _collect(worker, short)) >= 1

    # A full batch running and one request waiting fill a queue of one: the next is refused at once.
    long = SynthesisRequest("Long.", params=SamplingParams(max_new_tokens=400), seed=1)
    running = [worker.stream(long) for _ in range(batch)]
    firsts = [await stream.__anext__() for stream in running]
    assert all(first.index == 0 for first in firsts) and worker.active == batch
    waiting = asyncio.ensure_future(_collect(worker, short))
    await _wait_until(lambda: worker.queue_depth == 1)
    with pytest.raises(QueueFull) as refused:
        worker.submit(short, asyncio.get_running_loop())
    assert refused.value.status == 503 and refused.value.retry_after > 0

    # A client of a long request goes away: its generation stops and the waiting one takes its place.
    await running[0].aclose()
    assert len(await asyncio.wait_for(waiting, timeout=120)) >= 1
    for stream in running[1:]:
        await stream.aclose()
    await _wait_until(lambda: worker.active == 0 and worker.queue_depth == 0)


def test_stopping_the_engine_ends_a_running_stream_with_an_error_and_fails_the_waiting_ones(turbo_model,
                                                                                          engine):
    # A batch of one, so that the second request waits in the queue.
    worker = Engine(turbo_model, dataclasses.replace(engine.config, max_batch_size=1), "cpu", engine.voices)
    worker.start()

    async def stop_mid_stream():
        running = worker.stream(SynthesisRequest("Long.", params=SamplingParams(max_new_tokens=400), seed=1))
        await running.__anext__()
        waiting = asyncio.ensure_future(_collect(worker, SynthesisRequest("Waiting.", seed=1)))
        await _wait_until(lambda: worker.queue_depth == 1)
        await asyncio.to_thread(worker.stop)  # joins the worker: it must not finish 400 tokens first
        with pytest.raises(EngineNotReady):
            async for _ in running:
                pass
        with pytest.raises(EngineNotReady):
            await waiting

    asyncio.run(stop_mid_stream())
    assert not worker.ready and worker.active == 0


def test_loading_the_engine_warms_it_up_and_all_its_model_work_runs_on_the_engines_own_thread(
        random_checkpoint, tmp_path, caplog, monkeypatch):
    """Finding the checkpoint, loading, the warm-up and serving run on one thread, never the caller's (a
    second thread that ran torch's parallel kernels would slow that one down: see `engine`)."""
    from chatterbox_predictor import loading

    caplog.set_level("INFO", logger="chatterbox_predictor.engine")
    calls: list[tuple[str, int]] = []  # (what ran, on which thread)

    def recorded(what, real):
        def call(*args, **kwargs):
            calls.append((what, threading.get_ident()))
            return real(*args, **kwargs)
        return call

    monkeypatch.setattr(loading, "load_model", recorded("load", loading.load_model))
    monkeypatch.setattr(T3Batch, "step", recorded("step", T3Batch.step))
    find = recorded("checkpoint", lambda: random_checkpoint("turbo"))
    loaded = Engine.load(find, EngineConfig.from_settings(), "cpu", _library(tmp_path))
    assert any("warm-up generation took" in r.message for r in caplog.records)
    assert loaded.config.watermark and loaded.variant.name == "turbo"
    assert loaded.checkpoint_dir == random_checkpoint("turbo")
    loading_calls = len(calls)
    loaded.start()

    async def speak():
        request = SynthesisRequest("Hi.", params=SamplingParams(max_new_tokens=8))
        return [chunk async for chunk in loaded.stream(request)]

    try:
        assert asyncio.run(speak())
    finally:
        loaded.stop()
    assert [what for what, _ in calls[:3]] == ["checkpoint", "load", "step"]  # then the warm-up's steps
    assert len(calls) > loading_calls  # the request's steps
    assert {thread for _, thread in calls} == {loaded.thread.ident} != {threading.get_ident()}


@pytest.mark.parametrize("sizes", [(5, 100), (20, 5), ()])
def test_chunk_sizes_that_cannot_fill_the_vocoder_overlap_are_refused(sizes):
    with pytest.raises(ValueError, match="chunk_tokens"):
        StreamPlan(chunk_tokens=sizes)
