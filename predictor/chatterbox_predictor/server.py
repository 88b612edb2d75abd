"""The plan's REST API, the OpenAI-compatible speech API and the WebSocket, on KServe's FastAPI app.

`install(app, service)` adds our routes, error handlers and request-id middleware to the app KServe's
model server serves (`kserve.model_server.app`), beside KServe's own V1/V2, health and metrics routes.
Nothing here imports kserve: the app is handed in.

Every handler turns the engine's typed errors into a status with a JSON `detail` (503 with
`Retry-After` when the queue is full); audio is streamed while it is generated, and a client that goes
away cancels its generation (leaving the response's iterator closes the engine stream).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import contextvars
import hmac
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

from chatterbox_voicefile import MAX_VOICE_BYTES, VOICE_SUFFIX
from fastapi import APIRouter, Depends, FastAPI, File, Query, Request, UploadFile, WebSocket
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.websockets import WebSocketDisconnect

from . import metrics
from .audio import FORMATS, AudioEncoder
from .engine import Engine, SynthesisRequest
from .errors import EngineError, PayloadTooLarge
from .t3_stream import SamplingParams
from .text import complete_sentences
from .voices import VoiceDirectory

log = logging.getLogger(__name__)
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

# OpenAI's built-in voice names: existing clients send one of these; they get the default voice unless
# a voice file of that name exists.
OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer",
                 "verse", "marin", "cedar")


# -- request bodies ------------------------------------------------------------------------------------
class GenerationOptions(BaseModel):
    """Optional generation settings shared by every endpoint (None: the variant's library default).
    Their ranges are `SamplingParams.validate`'s, checked in `params()`: one place, a 400 naming the
    value."""

    model_config = ConfigDict(extra="forbid")

    seed: int | None = Field(None, ge=0, le=2**31 - 1, description="Same seed, same speech.")
    language: str | None = Field(None, max_length=8, description="Language id (multilingual variant).")
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = Field(None, description="Turbo only.")
    min_p: float | None = Field(None, description="English and Multilingual only.")
    repetition_penalty: float | None = None
    cfg_weight: float | None = Field(None, description="English and Multilingual only.")
    exaggeration: float | None = Field(None, description="English and Multilingual only.")
    max_new_tokens: int | None = Field(None, description="Cap on speech tokens per sentence group "
                                       "(25 tokens = 1 s); the server's token cap still applies.")

    def params(self) -> SamplingParams:
        params = SamplingParams(**{k: getattr(self, k) for k in SamplingParams.__dataclass_fields__})
        params.validate()
        return params


class GenerateRequest(GenerationOptions):
    text: str = Field(..., description="Text to speak.")
    voice_id: str | None = Field(None, description="Voice file name under /voices, with or without "
                                 ".pth; empty for the model's built-in voice.")
    format: Literal[FORMATS] = Field("wav", description="Audio format of the response.")


class SpeechRequest(GenerationOptions):
    """OpenAI's `POST /v1/audio/speech` body, plus our generation options as extensions."""

    model_config = ConfigDict(extra="allow")  # future OpenAI fields must not break existing clients

    model: str = Field(..., max_length=200)
    input: str
    voice: str = Field(..., max_length=200)
    response_format: Literal[FORMATS] = "mp3"
    speed: float = Field(1.0, ge=0.25, le=4.0)
    stream_format: Literal["audio", "sse"] = "audio"
    instructions: str | None = Field(None, description="Accepted and ignored: Chatterbox takes no "
                                     "style prompt (use exaggeration on the English variant).")


# -- authentication ------------------------------------------------------------------------------------
class ApiKeys:
    """Keys from a setting and from a file (a mounted Secret, re-read when it changes)."""

    def __init__(self, keys: str, keys_file: Path | None):
        self._static = [k.strip() for k in keys.split(",") if k.strip()]
        self._file = keys_file
        self._file_stamp = None
        self._file_keys: list[str] = []
        self._lock = threading.Lock()

    def keys(self) -> list[str]:
        if self._file is not None:
            try:
                stat = self._file.stat()
                stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
            except FileNotFoundError:
                stamp = None
            with self._lock:
                if stamp != self._file_stamp:
                    text = self._file.read_text() if stamp else ""
                    self._file_keys = [line.strip() for line in text.splitlines()
                                       if line.strip() and not line.startswith("#")]
                    self._file_stamp = stamp
        return self._static + self._file_keys

    @property
    def enabled(self) -> bool:
        return bool(self.keys())

    def check(self, presented: str | None) -> bool:
        keys = self.keys()
        if not keys:
            return True
        if not presented:
            return False
        given = presented.encode()
        # Compare with every key, without stopping early, in constant time per key.
        return any([hmac.compare_digest(given, key.encode()) for key in keys])


def presented_key(headers, query=None) -> str | None:
    if key := headers.get("x-api-key"):
        return key
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return query.get("api_key") if query is not None else None


class Unauthorized(EngineError):
    status = 401


# -- the service -------------------------------------------------------------------------------------
class TTSService:
    """What the routes need: the engine, the voice directory, the keys, and the directory watcher."""

    def __init__(self, engine: Engine, keys: ApiKeys, scan_interval: float = 2.0):
        self.engine = engine
        self.voices = VoiceDirectory(engine.voices)
        self.keys = keys
        self.scan_interval = scan_interval
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        metrics.register_engine(engine)

    def start(self) -> None:
        self.voices.scan()
        log.info("voices in %s: %s", self.voices.directory, self.voices.list())
        if not self.keys.enabled:
            log.warning("no API key configured (CHATTERBOX_API_KEYS / CHATTERBOX_API_KEYS_FILE): "
                        "the API is open to anyone who can reach it")
        self._watcher = threading.Thread(target=self._watch, name="voice-watcher", daemon=True)
        self._watcher.start()

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(self.scan_interval):
            try:
                self.voices.scan()
            except Exception:  # a flaky volume must not stop the watcher
                log.exception("scanning the voice directory failed")

    def resolve_openai_voice(self, voice: str) -> str | None:
        """A voice file of that name, else the built-in voice for OpenAI's names and "default"; any
        other name stays as it is, for the engine to refuse like every unknown voice."""
        if voice.lower() in (*OPENAI_VOICES, "default", "") and not self.engine.voices.exists(voice):
            return None
        return voice

    async def audio(self, request: SynthesisRequest, encoder: AudioEncoder, endpoint: str,
                    ) -> AsyncIterator[bytes]:
        """Starts a generation and waits for its first chunk, so that every error that can happen
        before audio exists (unknown voice, bad text, full queue) becomes an HTTP error, not a broken
        stream; returns the encoded audio of the rest as it comes."""
        started = time.monotonic()
        log.info("%s: %d characters, voice %s", endpoint, len(request.text), request.voice_id or "(built-in)")
        stream = self.engine.stream(request)
        try:
            first = await anext(stream, None)
        except BaseException:
            await stream.aclose()
            raise
        metrics.TTFA.labels(endpoint).observe(time.monotonic() - started)
        return self._encoded(first, stream, started, encoder, endpoint)

    async def _encoded(self, first, stream, started, encoder, endpoint) -> AsyncIterator[bytes]:
        audio_s = 0.0
        metrics.ACTIVE_STREAMS.inc()
        try:
            chunk = first
            while chunk is not None:
                audio_s += chunk.duration_s
                if data := encoder.encode(chunk.audio):
                    yield data
                chunk = await anext(stream, None)
            yield encoder.finish()
            if audio_s:
                elapsed = time.monotonic() - started
                metrics.RTF.labels(endpoint).observe(elapsed / audio_s)
                log.info("%s: %.2f s of audio in %.2f s", endpoint, audio_s, elapsed)
        except EngineError as exc:
            # The status line is sent: raising aborts the response, so the client sees a broken
            # transfer rather than a clean end of a truncated file.
            metrics.ERRORS.labels(type(exc).__name__).inc()
            log.error("stream ended early: %s", exc)
            raise
        finally:
            metrics.ACTIVE_STREAMS.dec()
            await stream.aclose()  # a client gone mid-stream lands here: cancels the generation


# -- routes ------------------------------------------------------------------------------------------
def build_router(service: TTSService) -> APIRouter:
    async def authorized(request: Request) -> None:
        if not service.keys.check(presented_key(request.headers)):
            raise Unauthorized("missing or invalid API key (send X-API-Key or Authorization: Bearer)")

    open_router = APIRouter()
    router = APIRouter(dependencies=[Depends(authorized)])

    @open_router.get("/health", tags=["health"])
    async def health() -> dict:
        """Liveness for the container's health check; `ready` says whether the model serves yet."""
        return {"status": "ok", "ready": service.engine.ready, "variant": service.engine.variant.name,
                "device": str(service.engine.device)}

    @router.post("/tts/generate", tags=["tts"], response_class=StreamingResponse,
                 responses={200: {"content": {"audio/wav": {}}, "description": "Audio, streamed."},
                            404: {"description": "Unknown voice."}, 503: {"description": "Queue full."}})
    async def generate(body: GenerateRequest):
        """Speaks `text` with `voice_id`; the audio streams while it is generated (a WAV of unknown
        length: header, then PCM as it comes)."""
        request = SynthesisRequest(body.text, voice_id=body.voice_id or None, params=body.params(),
                                   seed=body.seed, language=body.language)
        encoder = AudioEncoder(body.format, service.engine.sample_rate)
        chunks = await service.audio(request, encoder, "tts_generate")
        return StreamingResponse(chunks, media_type=encoder.media_type)

    @router.get("/voices", tags=["voices"])
    async def list_voices() -> list[str]:
        """Voice files available, as `<voice_id>.pth`."""
        return [v + VOICE_SUFFIX for v in service.voices.list()]

    @router.post("/voices", status_code=201, tags=["voices"])
    async def upload_voice(file: UploadFile = File(..., description="A voice .pth (Conditionals)"),
                           voice_id: str | None = Query(None, description="Defaults to the file name."),
                           overwrite: bool = Query(False, description="Replace an existing voice.")):
        """Uploads a voice file: validated (name, size, weights-only load, structure) before it lands,
        atomically; a bad upload leaves nothing behind."""
        raw = await _read_limited(file, MAX_VOICE_BYTES)
        name = voice_id or file.filename or ""
        saved = await asyncio.to_thread(service.voices.save, name, raw, overwrite)
        log.info("voice %s uploaded (%d bytes)", saved, len(raw))
        return {"voice_id": saved, "message": "Voice uploaded successfully."}

    @router.delete("/voices/{voice_id}", tags=["voices"])
    async def delete_voice(voice_id: str) -> dict:
        name = await asyncio.to_thread(service.voices.delete, voice_id)
        return {"message": f"Voice '{name}' deleted successfully."}

    @router.post("/voices/reload", tags=["voices"])
    async def reload_voices() -> dict:
        """Rescans the voice directory now (the operator calls this after writing a file)."""
        result = await asyncio.to_thread(service.voices.scan)
        return {"voices": [v + VOICE_SUFFIX for v in result.voices], "added": result.added,
                "removed": result.removed, "changed": result.changed}

    @router.post("/v1/audio/speech", tags=["openai"], response_class=StreamingResponse)
    async def speech(body: SpeechRequest):
        """OpenAI-compatible text to speech: `voice` is a voice id, or one of OpenAI's voice names for
        the default voice."""
        voice = service.resolve_openai_voice(body.voice)
        request = SynthesisRequest(body.input, voice_id=voice, params=body.params(), seed=body.seed,
                                   language=body.language)
        encoder = AudioEncoder(body.response_format, service.engine.sample_rate, body.speed)
        chunks = await service.audio(request, encoder, "openai_speech")
        if body.stream_format == "sse":
            return StreamingResponse(_sse(chunks), media_type="text/event-stream")
        return StreamingResponse(chunks, media_type=encoder.media_type)

    @router.get("/v1/audio/voices", tags=["openai"])
    async def openai_voices() -> dict:
        voices = [{"id": v, "object": "voice"} for v in service.voices.list()]
        return {"object": "list", "data": [{"id": "default", "object": "voice"}, *voices]}

    # On the open router: the WebSocket checks its key itself (a browser cannot set headers; ?api_key=).
    open_router.add_api_websocket_route("/tts/stream", _websocket_handler(service))
    combined = APIRouter()
    combined.include_router(open_router)
    combined.include_router(router)
    return combined


async def _read_limited(file: UploadFile, limit: int) -> bytes:
    data = bytearray()
    while chunk := await file.read(1 << 20):
        data += chunk
        if len(data) > limit:
            raise PayloadTooLarge(f"voice file is larger than the {limit}-byte limit")
    return bytes(data)


async def _sse(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    async for data in chunks:
        if data:
            event = {"type": "speech.audio.delta", "audio": base64.b64encode(data).decode()}
            yield f"data: {json.dumps(event)}\n\n".encode()
    # OpenAI's done event also reports text-token usage, which has no meaning here: left out, not faked.
    yield f"data: {json.dumps({'type': 'speech.audio.done'})}\n\n".encode()


# -- WebSocket -----------------------------------------------------------------------------------------
def _websocket_handler(service: TTSService):
    async def tts_stream(websocket: WebSocket):
        """Real-time speech. Send JSON messages `{"text": ..., "voice_id": ..., <options>}`; with
        `"partial": true` the text is buffered and only whole sentences are spoken until a message
        without it (or `{"type": "flush"}`) arrives; `{"type": "end"}` finishes after the audio.
        Receive `{"type": "start", ...}`, binary PCM16 frames (24 kHz mono), `{"type": "segment_end"}`
        per piece, `{"type": "error", "status", "detail"}` (the socket stays usable) and `{"type": "end"}`.
        """
        if not service.keys.check(presented_key(websocket.headers, websocket.query_params)):
            await websocket.close(code=1008, reason="missing or invalid API key")
            return
        await websocket.accept()
        await websocket.send_json({"type": "start", "sample_rate": service.engine.sample_rate,
                                   "encoding": "pcm_s16le", "channels": 1})
        segments: asyncio.Queue = asyncio.Queue()
        speaker = asyncio.create_task(_speak(service, websocket, segments))
        buffer, options, voice = "", GenerationOptions(), None
        try:
            while True:
                try:
                    message = json.loads(await websocket.receive_text())
                    if not isinstance(message, dict):
                        raise ValueError("a message must be a JSON object")
                    kind = message.pop("type", "text")
                    if kind not in ("text", "flush", "end"):
                        raise ValueError(f"unknown message type {kind!r}")
                    partial = bool(message.pop("partial", False))
                    buffer += str(message.pop("text", ""))
                    if "voice_id" in message:
                        voice = message.pop("voice_id") or None
                    if message:
                        options = GenerationOptions(**{**options.model_dump(exclude_unset=True), **message})
                except (ValueError, TypeError) as exc:  # also pydantic's ValidationError
                    await websocket.send_json({"type": "error", "status": 400, "detail": str(exc)[:500]})
                    continue
                if kind == "text" and partial:
                    ready, buffer = complete_sentences(buffer)
                else:
                    ready, buffer = buffer, ""
                if ready.strip():
                    await segments.put((ready, voice, options))
                if kind == "end":
                    await segments.put(None)
                    await speaker
                    await websocket.send_json({"type": "end"})
                    await websocket.close()
                    return
        except WebSocketDisconnect:
            pass
        finally:
            speaker.cancel()  # the client left: stop speaking (cancels the engine's generation)
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await speaker

    return tts_stream


async def _speak(service: TTSService, websocket: WebSocket, segments: asyncio.Queue) -> None:
    while (item := await segments.get()) is not None:
        text, voice, options = item
        try:
            request = SynthesisRequest(text, voice_id=voice, params=options.params(), seed=options.seed,
                                       language=options.language)
            encoder = AudioEncoder("pcm", service.engine.sample_rate)
            chunks = await service.audio(request, encoder, "websocket")
        except EngineError as exc:  # before any audio: counted here (mid-stream errors count in _encoded)
            metrics.ERRORS.labels(type(exc).__name__).inc()
            await websocket.send_json({"type": "error", "status": exc.status, "detail": str(exc)})
            continue
        try:
            async for data in chunks:
                if data:
                    await websocket.send_bytes(data)
            await websocket.send_json({"type": "segment_end", "text": text})
        except EngineError as exc:
            await websocket.send_json({"type": "error", "status": exc.status, "detail": str(exc)})


# -- wiring ------------------------------------------------------------------------------------------
def error_response(exc: EngineError) -> JSONResponse:
    metrics.ERRORS.labels(type(exc).__name__).inc()
    headers = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    if exc.status >= 500:
        log.error("%s: %s", type(exc).__name__, exc)
    else:
        log.info("refused with %d: %s", exc.status, exc)
    return JSONResponse({"detail": str(exc)}, status_code=exc.status, headers=headers)


def install(app: FastAPI, service: TTSService) -> None:
    async def engine_error(request, exc: EngineError):
        return error_response(exc)

    app.add_exception_handler(EngineError, engine_error)
    app.add_middleware(RequestIdMiddleware)
    app.include_router(build_router(service))


class RequestIdMiddleware:
    """Gives every HTTP request and WebSocket an id (the client's X-Request-ID, or a new one), visible
    to the logs for the whole life of the request, streaming included, and echoed in the response.
    Plain ASGI rather than `@app.middleware("http")`, which would sit between a streaming response
    and the client's disconnect."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        rid = re.sub(r"[^A-Za-z0-9._-]", "", given)[:64] or uuid.uuid4().hex
        token = request_id.set(rid)

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line, with the request id of the request being served."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name,
                 "message": record.getMessage(), "request_id": request_id.get()}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)
