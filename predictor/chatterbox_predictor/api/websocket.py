"""Real-time speech over a WebSocket: `/tts/stream`, for text that arrives in pieces (an LLM's output).

The key is checked by `auth` before the handshake completes, like every route's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from fastapi import WebSocket
from pydantic import ValidationError
from starlette.websockets import WebSocketDisconnect

from ..audio import AudioEncoder
from ..errors import EngineError
from ..text import complete_sentences
from . import metrics
from .auth import SUBPROTOCOL
from .protocol import DEFAULT_MAX_TEXT_CHARS, StreamOptions
from .service import TTSService


def websocket_handler(service: TTSService, max_text_chars: int = DEFAULT_MAX_TEXT_CHARS):
    """The `/tts/stream` endpoint; `max_text_chars` bounds the text held while a sentence is incomplete,
    as it bounds a request's text."""


    async def tts_stream(websocket: WebSocket):
        """Real-time speech. Send JSON messages `{"text": ..., "voice_id": ..., <options>}`; with
        `"partial": true` the text is buffered and only whole sentences are spoken until a message
        without it (or `{"type": "flush"}`) arrives; `{"type": "end"}` finishes after the audio.
        Options (`speed` too) persist for the rest of the session. A browser may offer the subprotocol
        `chatterbox.tts` (and its key as `chatterbox.key.<base64url>`, see `auth`); it is then accepted.
        Receive `{"type": "start", ...}`, binary PCM16 frames (24 kHz mono), `{"type": "segment_end"}`
        per piece, `{"type": "error", "status", "detail"}` (the socket stays usable) and `{"type": "end"}`.
        """
        offered = websocket.scope.get("subprotocols") or []
        await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
        await websocket.send_json({"type": "start", "sample_rate": service.sample_rate,
                                   "encoding": "pcm_s16le", "channels": 1})
        segments: asyncio.Queue = asyncio.Queue()
        speaker = asyncio.create_task(_speak(service, websocket, segments))
        buffer, options, voice = "", StreamOptions(), None
        try:
            while True:
                try:
                    message = json.loads(await websocket.receive_text())
                    if not isinstance(message, dict):
                        raise ValueError("a message must be a JSON object")
                    kind = message.pop("type", "text")
                    if kind not in ("text", "flush", "end"):
                        raise ValueError(f"unknown message type {kind!r}")
                    partial = message.pop("partial", False)
                    if not isinstance(partial, bool):
                        raise ValueError("partial must be true or false")
                    text = message.pop("text", "")
                    if not isinstance(text, str):
                        raise ValueError("text must be a string")
                    if len(buffer) + len(text) > max_text_chars:  # refused whole: nothing is half-kept
                        raise ValueError(f"more than {max_text_chars} characters would wait for the end "
                                         "of a sentence; send a flush, or end sentences sooner")
                    if "voice_id" in message:
                        voice = _voice_id(message.pop("voice_id"))
                    if message:  # options persist for the rest of the session
                        options = StreamOptions(**{**options.model_dump(exclude_unset=True), **message})
                    buffer += text
                except (ValueError, TypeError) as exc:  # ValidationError is a ValueError
                    detail = _first_problem(exc) if isinstance(exc, ValidationError) else str(exc)
                    await websocket.send_json({"type": "error", "status": 400, "detail": detail[:500]})
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


def _voice_id(value) -> str | None:
    """A message's voice id; whether it names a voice file is the engine's check, as for every protocol."""
    if value is not None and not isinstance(value, str):
        raise ValueError("voice_id must be a string")
    return value or None


def _first_problem(exc: ValidationError) -> str:
    problem = exc.errors()[0]
    return f"{'.'.join(str(p) for p in problem['loc'])}: {problem['msg']}"


async def _speak(service: TTSService, websocket: WebSocket, segments: asyncio.Queue) -> None:
    while (item := await segments.get()) is not None:
        text, voice, options = item
        try:
            encoder = AudioEncoder("pcm", service.sample_rate, options.speed)
            chunks = await service.audio(options.synthesis_request(text, voice), encoder, "websocket")
        except EngineError as exc:  # before any audio: counted here (mid-stream errors count in the service)
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
