"""The inference engine: one worker thread owns the model and turns requests into audio chunks.

Requests wait in a bounded queue; a single worker thread decodes up to `max_batch_size` of them together
(continuous batching, as LLM servers do): between steps, waiting requests join and finished or
cancelled ones leave; a step is one batched T3 forward for every active request (`t3_stream.T3Batch`,
the joiners' prefill alongside the others' next token), then each request's own part (its chunk plan,
S3Gen when a chunk is due, the watermark). Each chunk goes back to the requester's asyncio queue through
`loop.call_soon_threadsafe`; the event loop never runs model code. A failure is delivered as a value
and the worker carries on; a cancelled request (its client went away) leaves at the next step.

All model work of a server (loading, the warm-up, every step) runs on that one thread, a `ModelThread`:
on this CPU a second thread that has run a parallel torch operation, even one idle since, costs the
worker's steps ~30% (`bench/threads.py` measures it: libgomp keeps a team of OpenMP workers for each
such thread, and with more workers than cores, as we read it, its barriers stop spinning).

A request's whole state is one `Synthesis` (voice, sampler settings and seed, text pieces, and for the
current piece its `T3Row` and `SpeechStream`); a `Batcher` steps a list of them. Each request draws from
its own seeded generator, so its tokens do not depend on what else is in the batch, up to the
floating-point reordering of a batched forward (tests/predictor/test_batching.py measures it).
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
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future
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
    Decode,
    SpeechStream,
    flow_mels,
    warm_vocoder,
)
from .stream_plan import StreamPlan
from .t3_stream import ConditioningPrefix, T3Batch, T3Row, with_exaggeration
from .variants import Variant, get_variant
from .voices import VoiceLibrary
from .watermark import StreamWatermark

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class EngineConfig:
    """What the engine needs to know. The serving knobs have no defaults here: they come from the
    predictor's settings (`from_settings`), the one place their defaults and help texts are written."""

    variant: Variant
    dtype: str
    """Dtype of the T3 transformer (sampling is always done in float32)."""
    s3gen_dtype: str
    """Dtype of S3Gen's flow linear layers and vocoder convolutions, or "auto" (see `s3gen_dtype`)."""
    pack_weights: bool
    """On the CPU, T3's linear layers take oneDNN's packed weights (packed_linear)."""
    watermark: bool
    """Perth watermark on all audio (Resemble AI's responsible-AI default), seamless across chunks."""
    queue_size: int
    max_text_chars: int
    token_cap: int
    """Upper bound of speech tokens per text piece; requests may ask for fewer."""
    max_batch_size: int
    """Requests decoded together (one T3 forward a step for all of them); the others wait in the queue."""
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
                      s3gen_dtype=settings.s3gen_dtype, pack_weights=settings.pack_weights,
                      watermark=settings.watermark, queue_size=settings.queue_size,
                      max_text_chars=settings.max_text_chars, token_cap=settings.token_cap,
                      max_batch_size=settings.max_batch_size)
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


class ModelThread:
    """The one thread that runs a model, with all the intra-op threads torch was given (see the module
    docstring for why not two). Work is handed to it as calls, one after another; it lives as long as the
    process (a daemon, like the worker loop it runs: exiting never waits for it)."""

    def __init__(self, threads: int | None = None):
        """`threads`: torch's intra-op threads on it (None: what the creating thread has now)."""
        self._threads = threads or torch.get_num_threads()
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, fn: Callable, *args, **kwargs) -> Future:
        future: Future = Future()
        self._calls.put((future, fn, args, kwargs))
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="chatterbox-engine", daemon=True)
                self._thread.start()
        return future

    def call(self, fn: Callable, *args, **kwargs):
        """`fn(*args, **kwargs)` on the thread; waits for it and returns or raises what it did."""
        return self.submit(fn, *args, **kwargs).result()

    @property
    def ident(self) -> int | None:
        return self._thread.ident if self._thread is not None else None

    def _run(self) -> None:
        # OpenMP's thread count is a per-thread setting: a new thread starts from the default.
        torch.set_num_threads(self._threads)
        while True:
            future, fn, args, kwargs = self._calls.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller, who raises it
                future.set_exception(exc)


class Engine:
    sample_rate = SAMPLE_RATE

    def __init__(self, model, config: EngineConfig, device: str, voices: VoiceLibrary,
                 thread: ModelThread | None = None):
        """`voices` is the library the API shares (built once, by whoever owns the engine); `thread` is
        where the worker runs (None: a thread of its own; engines may share one if they take turns)."""
        self.model = model
        self.config = config
        self.variant: Variant = config.variant
        self.device = device
        self.voices = voices
        self.thread = thread or ModelThread()
        self.checkpoint_dir: Path | None = None
        """Where `load` found the model (None: the model was handed in)."""
        self._queue: queue.Queue = queue.Queue(maxsize=config.queue_size)
        self._worker: Future | None = None
        self._running: set[_Job] = set()
        self._stopping = False
        self._lock = threading.Lock()
        self._prefixes: OrderedDict[tuple, tuple[weakref.ref, ConditioningPrefix]] = OrderedDict()
        self.ready = False
        self.active = 0

    # -- lifecycle ---------------------------------------------------------------------------------
    @classmethod
    def load(cls, checkpoint: Path | Callable[[], Path], config: EngineConfig, device: str,
             voices: VoiceLibrary) -> Engine:
        """Loads (and warms up) the model on the thread its worker will run on, which `start` then uses;
        `checkpoint` is the directory, or a function finding it there (which may build one)."""
        if "float16" in (config.dtype, config.s3gen_dtype) and not device.startswith("cuda"):
            raise ValueError("float16 is for CUDA; on the CPU use bfloat16 (or float32)")
        thread = ModelThread()
        return thread.call(cls._build, checkpoint, config, device, voices, thread)

    @classmethod
    def _build(cls, checkpoint, config: EngineConfig, device: str, voices: VoiceLibrary,
               thread: ModelThread) -> Engine:
        from .loading import load_model

        directory = checkpoint() if callable(checkpoint) else checkpoint
        model = load_model(directory, config.variant, device=device)
        prepare_t3(model, config)
        prepare_s3gen(model, config)
        engine = cls(model, config, device, voices, thread)
        engine.checkpoint_dir = directory
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
            # English is one of the multilingual model's languages; the others take no language id.
            language = "en" if self.variant.needs_language else None
            for _ in self.synthesize(SynthesisRequest(
                    "Warm up.", params=SamplingParams(max_new_tokens=12), seed=0, language=language),
                    threading.Event()):
                pass
            log.info("warm-up generation took %.2f s", time.monotonic() - started)

    def start(self) -> None:
        self._stopping = False
        self._worker = self.thread.submit(self._work)
        self.ready = True

    def stop(self, wait: bool = True) -> None:
        """Stops taking requests, cancels the running ones (they stop at the next step), fails the waiting
        ones, and lets the worker exit; `wait` joins it (not on an event loop: KServe's unload route and
        signal handler call the model's stop there)."""
        with self._lock:
            self.ready = False
            self._stopping = True
            running = list(self._running)
        if self._worker is None:
            return
        for job in running:
            job.cancelled.set()
        while True:  # fail the waiting requests now rather than leave their clients hanging
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.deliver(EngineNotReady("the server is shutting down"))
        self._queue.put(None)
        if wait:
            self._worker.result(timeout=60)
            self._worker = None

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
        batcher = Batcher(self.model.t3)
        jobs: dict[Synthesis, _Job] = {}
        while True:
            if not self._admit(batcher, jobs):  # stopping: the running requests were cancelled
                for synthesis in list(jobs):
                    self._finish(jobs, synthesis, EngineNotReady("the server is shutting down"))
                return
            for synthesis, job in list(jobs.items()):
                if job.cancelled.is_set():  # its client left, or the server stops: leaves before the step
                    batcher.drop(synthesis)
                    self._finish(jobs, synthesis, None)
            if not batcher.active:
                continue
            try:
                for synthesis, item in batcher.step():
                    if isinstance(item, AudioChunk):
                        jobs[synthesis].deliver(item)
                    else:
                        self._finish(jobs, synthesis, item)
            except Exception as exc:  # the shared forward failed: every request in it is lost, not the worker
                error = _failure(exc)
                for synthesis in list(batcher.active):  # the batch is dropped whole: its cache may be torn
                    self._finish(jobs, synthesis, error)
                batcher = Batcher(self.model.t3)

    def _admit(self, batcher: Batcher, jobs: dict) -> bool:
        """Takes waiting requests into the batch, up to `max_batch_size` (waits for one when the batch is
        empty); False once the engine stops."""
        while len(batcher.active) < self.config.max_batch_size:
            try:
                job = self._queue.get() if not batcher.active else self._queue.get_nowait()
            except queue.Empty:
                return True
            if job is None:
                return False
            with self._lock:  # stop() either sees this job as running or this sees it stopping
                if self._stopping:
                    job.deliver(EngineNotReady("the server is shutting down"))
                    continue
                if job.cancelled.is_set():
                    continue
                self._running.add(job)
            try:
                synthesis = Synthesis(self, job.request)
                batcher.add(synthesis)
            except Exception as exc:  # noqa: BLE001 - a request that cannot start fails alone
                with self._lock:
                    self._running.discard(job)
                job.deliver(_failure(exc))
                continue
            jobs[synthesis] = job
            self.active = len(jobs)
        return True

    def _finish(self, jobs: dict, synthesis: Synthesis, outcome: BaseException | None) -> None:
        """Ends a request: None is a complete stream; a request cancelled meanwhile gets the shutdown
        error (its client left, so nobody listens, or the server stops: then say so, rather than end a
        truncated stream as if it were whole)."""
        job = jobs.pop(synthesis)
        if outcome is None and job.cancelled.is_set():
            outcome = EngineNotReady("the server is shutting down")
        job.deliver(outcome)
        with self._lock:
            self._running.discard(job)
        self.active = len(jobs)

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
        """Audio chunks for `request` alone, in order, on the calling thread (the warm-up, the benchmark
        and tests; the server's requests go through the worker); stops early once `cancelled` is set."""
        batcher = Batcher(self.model.t3)
        batcher.add(Synthesis(self, request))
        while batcher.active and not cancelled.is_set():
            for _, item in batcher.step():
                if isinstance(item, BaseException):
                    raise item
                if item is not None:
                    yield item


class Synthesis:
    """One request's whole state, from its first text piece to its last chunk: the sampling settings,
    seed and random generator, the voice, the text pieces, and for the current piece its T3 row (tokens,
    sampler, place in the batch's KV cache), its S3Gen stream state and where its chunk plan stands.

    A `Batcher` steps it: `row` is what the batch's T3 forward advances; `take(token)` is the request's
    part of a step (the chunk plan, S3Gen and the watermark when a chunk is due).
    """

    def __init__(self, engine: Engine, request: SynthesisRequest):
        self.started = time.monotonic()
        self.engine = engine
        self.request = request
        cfg, variant = engine.config, engine.variant
        if variant.needs_language and not request.language:
            raise InvalidInput(f"the {variant.name} model needs a language id")
        self.pieces = text_prep.prepare(request.text, variant, cfg.max_text_chars)
        self.params = request.params.resolved(variant.sampling_defaults, cfg.token_cap)
        self.conds = engine.voice(request.voice_id)
        t3_dtype = next(engine.model.t3.parameters()).dtype
        self.t3_cond = with_exaggeration(self.conds.t3, self.params.exaggeration).to(dtype=t3_dtype)
        self.prefix = engine._prefix(self.conds.t3, self.t3_cond, self.params.exaggeration, t3_dtype) \
            if cfg.prefix_cache_entries else None
        self.seed = request.seed if request.seed is not None else random.randrange(2**31)
        self.generator = torch.Generator(device=engine.device).manual_seed(self.seed)
        self.index, self.position = 0, 0.0  # chunks delivered, seconds of audio delivered
        self.piece_no = -1
        self.row: T3Row | None = None
        self._watermark = StreamWatermark(engine.model.watermarker, SAMPLE_RATE) if cfg.watermark else None

    def next_piece(self) -> T3Row | None:
        """Starts the next text piece: its T3 row (to add to the batch), or None after the last one."""
        self.piece_no += 1
        self.row = None
        if self.piece_no == len(self.pieces):
            return None
        engine, request = self.engine, self.request
        tokens_in = engine.variant.text_tokens(engine.model, self.pieces[self.piece_no], request.language)
        self.row = T3Row(engine.model.t3, engine.variant, self.t3_cond, tokens_in, self.params,
                         self.generator, self.prefix)
        self._speech = engine._speech_stream(self.conds.gen, self.seed + 7919 * self.piece_no,
                                             request.stream, self.piece_no == 0)
        self._bounds = engine.config.plan.bounds(self.index)
        self._next_bound = next(self._bounds) if request.stream else None
        self._tokens: list[int] = []
        self._reported = 0
        return self.row

    def take(self, token: int | None) -> _Due | None:
        """The request's part of a step, given the token its row drew (None: end of speech): what a chunk
        needs when the plan says one is due (`chunk` makes it). `row.done` afterwards means the piece is
        over."""
        final = token is None
        if not final:
            self._tokens.append(token)
            # At the cap no token can follow: decode the last chunk now, not one step later.
            final = self.row.done
            if not final and (self._next_bound is None or len(self._tokens) < self._next_bound):
                return None
            if not final:
                self._next_bound = next(self._bounds)
        return _Due(self._speech.prepare(self._tokens, final=final), final)

    def chunk(self, due: _Due, mels: torch.Tensor | None) -> AudioChunk | None:
        """The chunk `due` asked for, given its flow pass's mels (None when it had no pass)."""
        samples = self._speech.finish(due.decode, mels).numpy() if due.decode is not None else np.zeros(0)
        if self._watermark is not None:  # the piece's last chunk flushes what the watermark held back
            samples = self._watermark.push(samples, due.final)
        if not len(samples):
            return None
        chunk = AudioChunk(np.asarray(samples, dtype=np.float32), SAMPLE_RATE, self.index, self.position,
                           self.piece_no, self._tokens[self._reported:], time.monotonic() - self.started)
        self._reported = len(self._tokens)
        self.index += 1
        self.position += chunk.duration_s
        return chunk


@dataclass(frozen=True)
class _Due:
    """A chunk a request needs: its S3Gen decode (None: no new frame, though the piece's end still
    flushes the watermark), and whether it ends the piece."""

    decode: Decode | None
    final: bool


class Batcher:
    """Syntheses advanced together: per step one batched T3 forward (`T3Batch.step`) for all their rows,
    then each request's own part (`Synthesis.take`), then the chunks that are due. A finished piece's row
    leaves the batch and the next piece's joins at the end; a finished request leaves.

    The chunks' S3Gen flow passes run as one batch where they have the same shape (streams at the same
    point of their chunk plans, as requests that arrive together are): on the development CPU four first-
    chunk passes (Turbo's 1 s prompt tail) batched cost 0.55 of four one after another, eight 0.46; with
    the 3 s tail of later chunks 0.70 and 0.63 (full-size Turbo, `bench/flow.py`, bench/results/flow.json).
    The vocoder runs per stream (its excitation noise is the stream's own). Requests that have not
    delivered audio yet go first: the first chunk (the time to first audio) should not wait behind
    another stream's later one.
    """

    def __init__(self, t3):
        self.batch = T3Batch(t3)
        self.active: list[Synthesis] = []

    def add(self, synthesis: Synthesis) -> None:
        """Raises what the request's first piece raises (bad text for the tokenizer, ...)."""
        row = synthesis.next_piece()
        if row is not None:
            self.batch.add(row)
        self.active.append(synthesis)

    def drop(self, synthesis: Synthesis) -> None:
        self.active.remove(synthesis)
        if synthesis.row is not None and synthesis.row.slot is not None:
            self.batch.remove(synthesis.row)
        synthesis.row = None

    def step(self) -> Iterator[tuple[Synthesis, AudioChunk | BaseException | None]]:
        """Runs one step; yields (synthesis, chunk) for each chunk made, (synthesis, None) when a request
        is complete and (synthesis, error) when its own part failed (it has left; the others go on). A
        failure of the shared forward propagates: every request in the batch is then lost."""
        tokens = self.batch.step() if self.batch.rows else {}
        due: dict[Synthesis, _Due] = {}
        for synthesis in list(self.active):
            if synthesis.row is None:
                continue
            try:
                wanted = synthesis.take(tokens[synthesis.row])
            except Exception as exc:  # noqa: BLE001 - one request's failure must not end the others
                self.drop(synthesis)
                yield synthesis, _failure(exc)
                continue
            if wanted is not None:
                due[synthesis] = wanted
        for group in _flow_groups(due):
            passes = [due[s].decode.flow for s in group if due[s].decode is not None]
            try:
                mels = iter(flow_mels(group[0].engine.model.s3gen.flow, passes) if passes else [])
            except Exception as exc:  # noqa: BLE001 - the group's requests fail, the others go on
                for synthesis in group:
                    self.drop(synthesis)
                    yield synthesis, _failure(exc)
                continue
            for synthesis in group:
                wanted = due[synthesis]
                try:
                    chunk = synthesis.chunk(wanted, next(mels) if wanted.decode is not None else None)
                except Exception as exc:  # noqa: BLE001
                    self.drop(synthesis)
                    yield synthesis, _failure(exc)
                    continue
                if chunk is not None:
                    yield synthesis, chunk
        for synthesis in list(self.active):  # pieces that ended: the next one's row joins, or it is done
            row = synthesis.row
            if row is not None and not row.done:
                continue
            try:
                if row is not None:
                    self.batch.remove(row)
                    row = synthesis.next_piece()
                if row is not None:
                    self.batch.add(row)
                else:
                    self.active.remove(synthesis)
                    yield synthesis, None
            except Exception as exc:  # noqa: BLE001
                self.drop(synthesis)
                yield synthesis, _failure(exc)


def prepare_t3(model, config: EngineConfig) -> None:
    """Puts the loaded model's T3 in the configured dtype, then (on the CPU) packs its linear layers; in
    that order, since a packed weight no longer follows `.to(dtype)`."""
    if config.dtype != "float32":
        model.t3.to(dtype=DTYPES[config.dtype])
    if config.pack_weights and model.t3.device.type == "cpu":
        from .packed_linear import pack_linears

        log.info("T3: %d linear layers packed for oneDNN", pack_linears(model.t3))


def s3gen_dtype(config: EngineConfig, device: torch.device | str) -> torch.dtype:
    """The dtype S3Gen's flow products and vocoder convolutions compute in on `device` ("auto" resolved)."""
    from .s3gen_precision import native

    if config.s3gen_dtype != "auto":
        return DTYPES[config.s3gen_dtype]
    return torch.bfloat16 if native(torch.bfloat16, device) else torch.float32


def prepare_s3gen(model, config: EngineConfig) -> None:
    """Computes S3Gen's weight normalisations once, then puts its heavy products in `s3gen_dtype` (see
    s3gen_precision)."""
    from .s3gen_precision import fold_weight_norm, reduce_s3gen

    folded = fold_weight_norm(model.s3gen)
    dtype = s3gen_dtype(config, model.s3gen.device)
    linears, convs = reduce_s3gen(model.s3gen, dtype)
    log.info("S3Gen: %d weight norms folded; %d flow linear layers and %d vocoder convolutions in %s",
             folded, linears, convs, dtype)


def _flow_groups(due: dict[Synthesis, _Due]) -> list[list[Synthesis]]:
    """The requests with a chunk due, grouped by the shape of their flow pass (one batch each; a chunk
    with no pass is a group of its own), groups with a request's first chunk first."""
    groups: dict[object, list[Synthesis]] = {}
    for synthesis, wanted in due.items():
        key = wanted.decode.flow.shape if wanted.decode is not None else synthesis
        groups.setdefault(key, []).append(synthesis)
    return sorted(groups.values(), key=lambda group: all(s.index > 0 for s in group))


def _failure(exc: Exception) -> EngineError:
    """What a request's client gets for `exc`: our typed errors as they are, anything else (a model
    failure) logged and wrapped."""
    if isinstance(exc, EngineError):
        return exc
    log.exception("generation failed", exc_info=exc)
    return GenerationFailed(f"generation failed: {type(exc).__name__}: {exc}")


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
