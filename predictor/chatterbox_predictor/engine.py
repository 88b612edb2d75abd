"""The inference engine: one worker thread owns the model and turns requests into audio chunks.

Shape (the one KServe's own servers use): requests wait in a bounded queue; a single worker thread
takes them one at a time and runs `synthesize`, a plain generator of `AudioChunk`s; each chunk goes
back to the requester's asyncio queue through `loop.call_soon_threadsafe`. The event loop never runs
model code. A failure is delivered as a value and the worker carries on; a cancelled request (its client
went away) stops at the next token and frees the worker.

Per request the state lives in a `T3Stream` (KV cache, sampler) and a `SpeechStream` (S3Gen caches), so
that the worker can later advance several requests together.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import random
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import text as text_prep
from .audio import pcm16
from .errors import EngineError, EngineNotReady, GenerationFailed, InvalidInput, QueueFull, VoiceNotFound
from .sampling import SamplingParams
from .speech import (
    FRAMES_PER_TOKEN,
    LOOKAHEAD_FRAMES,
    OVERLAP_FRAMES,
    SAMPLE_RATE,
    SpeechStream,
    warm_vocoder,
)
from .stream_plan import StreamPlan
from .t3_stream import ConditioningPrefix, T3Stream, with_exaggeration
from .variants import Variant, get_variant
from .voices import VoiceLibrary

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class EngineConfig:
    """What the engine needs to know. The serving knobs have no defaults here: they come from the
    predictor's settings (`from_settings`), the one place their defaults and help texts are written."""

    variant: Variant
    dtype: str
    """Dtype of the T3 transformer on CUDA (S3Gen stays float32); the CPU always uses float32."""
    watermark: bool
    """Perth watermark on every chunk (Resemble AI's responsible-AI default)."""
    queue_size: int
    max_text_chars: int
    token_cap: int
    """Upper bound of speech tokens per text piece; requests may ask for fewer."""
    stream_plan: StreamPlan | None = None
    """Chunk sizes and S3Gen windows while streaming (None: the variant's own, see stream_plan.py)."""
    prefix_cache_entries: int = 8
    """Voices (per exaggeration) whose T3 conditioning keys and values are kept (~40 MB each, Turbo)."""
    warmup: bool = True

    @classmethod
    def from_settings(cls, settings=None, **overrides) -> EngineConfig:
        """The engine's part of `settings` (a PredictorSettings; None: its defaults), then `overrides`."""
        from .settings import PredictorSettings

        settings = PredictorSettings() if settings is None else settings
        values = dict(variant=get_variant(settings.variant), dtype=settings.dtype,
                      watermark=settings.watermark, queue_size=settings.queue_size,
                      max_text_chars=settings.max_text_chars, token_cap=settings.token_cap)
        values.update(overrides)
        if isinstance(values["variant"], str):
            values["variant"] = get_variant(values["variant"])
        return cls(**values)

    @property
    def plan(self) -> StreamPlan:
        return self.stream_plan if self.stream_plan is not None else self.variant.stream_plan


@dataclass(frozen=True)
class SynthesisRequest:
    text: str
    voice_id: str | None = None
    params: SamplingParams = field(default_factory=SamplingParams)
    seed: int | None = None
    language: str | None = None
    """Language id for the multilingual variant (e.g. "fr")."""
    stream: bool = True
    """False: decode each text piece once, when all its tokens exist (the library's way)."""


@dataclass
class AudioChunk:
    audio: np.ndarray
    """Float32 mono samples in [-1, 1] at `sample_rate`."""
    sample_rate: int
    index: int
    start_s: float
    """Where this chunk starts in the request's audio."""
    piece: int
    """Which text piece (sentence group) it belongs to."""
    tokens: list[int]
    """The speech tokens generated since the previous chunk (this chunk's audio may lag them)."""
    elapsed_s: float
    """Time since the request started running, when the chunk was ready."""

    @property
    def duration_s(self) -> float:
        return len(self.audio) / self.sample_rate

    def pcm16(self) -> bytes:
        return pcm16(self.audio)


class Engine:
    sample_rate = SAMPLE_RATE

    def __init__(self, model, config: EngineConfig, device: str, voices: VoiceLibrary):
        """`voices` is the library the API shares (built once, by whoever owns the engine)."""
        self.model = model
        self.config = config
        self.variant: Variant = config.variant
        self.device = device
        self.voices = voices
        self._queue: queue.Queue = queue.Queue(maxsize=config.queue_size)
        self._thread: threading.Thread | None = None
        self._running: _Job | None = None
        self._stopping = False
        self._lock = threading.Lock()
        self._prefixes: OrderedDict[tuple, tuple[weakref.ref, ConditioningPrefix]] = OrderedDict()
        self.ready = False
        self.active = 0

    # -- lifecycle ---------------------------------------------------------------------------------
    @classmethod
    def load(cls, checkpoint_dir: Path, config: EngineConfig, device: str, voices: VoiceLibrary) -> Engine:
        from .loading import load_model

        model = load_model(checkpoint_dir, config.variant, device=device)
        if device.startswith("cuda") and config.dtype != "float32":
            model.t3.to(dtype=DTYPES[config.dtype])
        engine = cls(model, config, device, voices)
        if config.warmup:
            engine.warm_up()
        return engine

    def warm_up(self) -> None:
        """Touch every vocoder input length a stream uses, then run a short generation with the built-in
        voice: the first request should not pay for kernel selection and allocation."""
        started = time.monotonic()
        warm_vocoder(self.model.s3gen, self.largest_vocoder_input)
        log.info("vocoder warm-up took %.2f s", time.monotonic() - started)
        if self.model.conds is not None:
            started = time.monotonic()
            for _ in self.synthesize(SynthesisRequest(
                    "Warm up.", params=SamplingParams(max_new_tokens=12), seed=0), threading.Event()):
                pass
            log.info("warm-up generation took %.2f s", time.monotonic() - started)

    def start(self) -> None:
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name="chatterbox-engine", daemon=True)
        self._thread.start()
        self.ready = True

    def stop(self, wait: bool = True) -> None:
        """Stops taking requests, cancels the one running (it stops at its next token), fails the waiting
        ones, and lets the worker exit; `wait` joins it (not on an event loop: KServe's unload route and
        signal handler call the model's stop there)."""
        with self._lock:
            self.ready = False
            self._stopping = True
            running = self._running
        if self._thread is None:
            return
        if running is not None:
            running.cancelled.set()
        while True:  # fail the waiting requests now rather than leave their clients hanging
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.deliver(EngineNotReady("the server is shutting down"))
        self._queue.put(None)
        if wait:
            self._thread.join(timeout=60)
            self._thread = None

    @property
    def largest_vocoder_input(self) -> int:
        """Mel frames of the longest vocoder call a streamed chunk makes: the largest chunk, the overlap it
        re-reads, then at the end of a piece the frames that were waiting and the three silence tokens."""
        return FRAMES_PER_TOKEN * (self.config.plan.largest_chunk + 3) + 2 * LOOKAHEAD_FRAMES + OVERLAP_FRAMES

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    # -- the worker ----------------------------------------------------------------------------------
    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            with self._lock:  # stop() either sees this job as running or this sees it stopping
                if self._stopping:
                    job.deliver(EngineNotReady("the server is shutting down"))
                    continue
                if job.cancelled.is_set():
                    continue
                self._running = job
            self.active += 1
            try:
                for chunk in self.synthesize(job.request, job.cancelled):
                    job.deliver(chunk)
                # Cancelled: its client left (nobody listens) or the server stops (say so, rather than
                # end a truncated stream as if it were whole).
                job.deliver(EngineNotReady("the server is shutting down") if job.cancelled.is_set() else None)
            except EngineError as exc:
                job.deliver(exc)
            except Exception as exc:  # a model failure must not take the worker down
                log.exception("generation failed")
                job.deliver(GenerationFailed(f"generation failed: {type(exc).__name__}: {exc}"))
            finally:
                self.active -= 1
                with self._lock:
                    self._running = None

    def submit(self, request: SynthesisRequest, loop: asyncio.AbstractEventLoop) -> _Job:
        if not self.ready:
            raise EngineNotReady("the model is not loaded yet")
        job = _Job(request, loop)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise QueueFull(f"{self.config.queue_size} requests are already waiting") from None
        return job

    async def stream(self, request: SynthesisRequest) -> AsyncIterator[AudioChunk]:
        """Chunks as they are generated; leaving the loop early (client gone) cancels the request."""
        job = self.submit(request, asyncio.get_running_loop())
        try:
            while True:
                item = await job.out.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            job.cancelled.set()

    # -- synthesis (runs on the worker) -----------------------------------------------------------
    def voice(self, voice_id: str | None):
        """The voice's Conditionals on the device; None or "" is the checkpoint's built-in voice."""
        if voice_id:
            return self.voices.get(voice_id)
        if self.model.conds is None:
            raise VoiceNotFound("this checkpoint has no built-in voice: name a voice_id")
        return self.model.conds

    def _prefix(self, voice_t3, t3_cond, exaggeration: float, dtype: torch.dtype) -> ConditioningPrefix:
        """The voice's T3 conditioning prefix, from a small LRU (worker thread only). Keyed by the voice
        object itself (a weak reference, so a voice evicted or replaced on disk never matches again)."""
        key = (id(voice_t3), float(exaggeration), dtype)
        hit = self._prefixes.get(key)
        if hit is not None and hit[0]() is voice_t3:
            self._prefixes.move_to_end(key)
            return hit[1]
        prefix = ConditioningPrefix.compute(self.model.t3, t3_cond)
        self._prefixes[key] = (weakref.ref(voice_t3), prefix)
        self._prefixes.move_to_end(key)
        while len(self._prefixes) > self.config.prefix_cache_entries:
            self._prefixes.popitem(last=False)
        return prefix

    def _speech_stream(self, ref: dict, seed: int, stream: bool, first_piece: bool) -> SpeechStream:
        """S3Gen state of one text piece; a piece decoded in one go sees the whole prompt, as in the
        library. Only the request's first chunk, which sets the time to first audio, gets the plan's
        shorter first prompt window: later pieces start while earlier audio is still playing."""
        plan = self.config.plan
        window = plan.prompt_tokens if stream else None
        first = plan.first_prompt_tokens if stream and first_piece else window
        return SpeechStream(self.model.s3gen, ref, meanflow=self.variant.meanflow, seed=seed,
                            prompt_tokens=window, first_prompt_tokens=first,
                            context_tokens=plan.context_tokens)

    def synthesize(self, request: SynthesisRequest, cancelled: threading.Event) -> Iterator[AudioChunk]:
        """Audio chunks for `request`, in order; stops early once `cancelled` is set."""
        started = time.monotonic()
        cfg = self.config
        if self.variant.needs_language and not request.language:
            raise InvalidInput(f"the {self.variant.name} model needs a language id")
        pieces = text_prep.prepare(request.text, self.variant, cfg.max_text_chars)
        params = request.params.resolved(self.variant.sampling_defaults, cfg.token_cap)
        conds = self.voice(request.voice_id)
        t3_dtype = next(self.model.t3.parameters()).dtype
        t3_cond = with_exaggeration(conds.t3, params.exaggeration).to(dtype=t3_dtype)
        prefix = self._prefix(conds.t3, t3_cond, params.exaggeration, t3_dtype) \
            if cfg.prefix_cache_entries else None
        seed = request.seed if request.seed is not None else random.randrange(2**31)
        generator = torch.Generator(device=self.device).manual_seed(seed)

        plan = cfg.plan
        index, position = 0, 0.0
        for piece_no, piece in enumerate(pieces):
            tokens_in = self.variant.text_tokens(self.model, piece, request.language)
            t3 = T3Stream(self.model.t3, self.variant, t3_cond, tokens_in, params, generator, prefix)
            speech = self._speech_stream(conds.gen, seed + 7919 * piece_no, request.stream, piece_no == 0)
            bounds = plan.bounds()
            next_bound = next(bounds) if request.stream else None
            tokens: list[int] = []
            reported = 0
            while True:
                if cancelled.is_set():
                    return
                token = t3.next_token()
                final = token is None
                if not final:
                    tokens.append(token)
                    # At the cap no token can follow: decode the last chunk now, not one pass later.
                    final = t3.done
                    if not final and (next_bound is None or len(tokens) < next_bound):
                        continue
                    if not final:
                        next_bound = next(bounds)
                audio = speech.decode(tokens, final=final)
                if len(audio):
                    samples = audio.numpy()
                    if cfg.watermark:
                        samples = self.model.watermarker.apply_watermark(samples, sample_rate=SAMPLE_RATE)
                    chunk = AudioChunk(np.asarray(samples, dtype=np.float32), SAMPLE_RATE, index, position,
                                       piece_no, tokens[reported:], time.monotonic() - started)
                    reported = len(tokens)
                    index += 1
                    position += chunk.duration_s
                    yield chunk
                if final:
                    break


class _Job:
    """A queued request and the way back to its event loop."""

    def __init__(self, request: SynthesisRequest, loop: asyncio.AbstractEventLoop):
        self.request = request
        self.loop = loop
        self.out: asyncio.Queue = asyncio.Queue()
        self.cancelled = threading.Event()

    def deliver(self, item) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening any more
            self.loop.call_soon_threadsafe(self.out.put_nowait, item)
