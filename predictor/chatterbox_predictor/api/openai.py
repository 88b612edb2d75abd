"""OpenAI-compatible speech: `POST /v1/audio/speech` (raw audio or server-sent events) and the voice list.

Existing OpenAI clients work unchanged: `voice` may be one of OpenAI's names (the model's built-in
voice unless a voice file of that name exists) or one of our voice ids; our generation options ride
along as extra body fields.
"""

import asyncio
import base64
import json
from collections.abc import AsyncIterator

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from ..audio import AudioEncoder
from .protocol import OpenAIVoice, OpenAIVoiceList, SpeechRequest
from .routes import AUDIO_TYPES
from .service import TTSService
from .spec import errors


def openai_router(service: TTSService, speech_model: type[SpeechRequest] = SpeechRequest) -> APIRouter:
    router = APIRouter()

    @router.post("/v1/audio/speech", tags=["openai"], response_class=StreamingResponse,
                 operation_id="createSpeech",
                 responses={200: {"content": {t: {} for t in (*AUDIO_TYPES, "text/event-stream")},
                                  "description": "Audio (or events), streamed while it is generated."},
                            **errors(400, 404, 422, 501, 503)})
    async def speech(body: speech_model):  # type: ignore[valid-type]
        """OpenAI-compatible text to speech: `voice` is a voice id, or one of OpenAI's voice names for
        the built-in voice."""
        voice = await asyncio.to_thread(service.resolve_openai_voice, body.voice)
        encoder = AudioEncoder(body.response_format, service.sample_rate, body.speed)
        chunks = await service.audio(body.synthesis_request(body.input, voice), encoder, "openai_speech")
        if body.stream_format == "sse":
            return StreamingResponse(_sse(chunks), media_type="text/event-stream")
        return StreamingResponse(chunks, media_type=encoder.media_type)

    @router.get("/v1/audio/voices", tags=["openai"], operation_id="listOpenAIVoices")
    async def openai_voices() -> OpenAIVoiceList:
        """The built-in voice ("default") and every voice file, as OpenAI-style voice objects."""
        voices = await asyncio.to_thread(service.voices.list)
        return OpenAIVoiceList(data=[OpenAIVoice(id="default"), *(OpenAIVoice(id=v) for v in voices)])

    return router


async def _sse(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    async for data in chunks:
        if data:
            event = {"type": "speech.audio.delta", "audio": base64.b64encode(data).decode()}
            yield f"data: {json.dumps(event)}\n\n".encode()
    # OpenAI's done event also reports text-token usage, which has no meaning here: left out, not faked.
    yield f"data: {json.dumps({'type': 'speech.audio.done'})}\n\n".encode()
