"""The plan's REST API: `/tts/generate`, `/voices`, and the container's `/health`. Thin: each route
validates through `protocol`, calls the service or the voice directory, and shapes the answer."""

import asyncio
import logging

from chatterbox_voicefile import MAX_VOICE_BYTES, VOICE_SUFFIX
from fastapi import APIRouter, Depends, File, Path, Query, Response, UploadFile
from fastapi.responses import StreamingResponse

from ..audio import MEDIA_TYPES, AudioEncoder
from ..voice_directory import upload_file_name
from . import cloning
from .protocol import (
    DEFAULT_MAX_TUNE_STEPS,
    VOICE_ID_MAX_CHARS,
    VOICE_ID_PATTERN,
    CloneReport,
    CloneResponse,
    GenerateRequest,
    HealthResponse,
    MessageResponse,
    ReloadResponse,
    UploadResponse,
)
from .service import TTSService, read_limited
from .spec import errors, links

log = logging.getLogger(__name__)

AUDIO_TYPES = sorted(set(MEDIA_TYPES.values()))


def rest_router(service: TTSService, generate_model: type[GenerateRequest] = GenerateRequest,
                max_tune_steps: int = DEFAULT_MAX_TUNE_STEPS) -> APIRouter:
    """`generate_model` is `GenerateRequest` with the server's text limit (`protocol.with_text_limit`);
    `max_tune_steps` is the server's cap on a clone's tuning steps, stated in the schema."""
    router = APIRouter()

    @router.get("/health", tags=["health"], operation_id="health")
    async def health() -> HealthResponse:
        """Liveness for the container's health check; `ready` says whether the model serves yet."""
        engine = service.engine
        return HealthResponse(status="ok", ready=engine.ready, variant=engine.variant.name,
                              device=str(engine.device))

    @router.post("/tts/generate", tags=["tts"], response_class=StreamingResponse, operation_id="generate",
                 responses={200: {"content": {t: {} for t in AUDIO_TYPES},
                                  "description": "Audio, streamed while it is generated."},
                            **errors(400, 404, 422, 501, 503)})
    async def generate(body: generate_model):  # type: ignore[valid-type]
        """Speaks `text` with `voice_id`; the audio streams while it is generated (a WAV of unknown
        length: header, then PCM as it comes)."""
        encoder = AudioEncoder(body.format, service.sample_rate, body.speed)
        chunks = await service.audio(body.synthesis(), encoder, "tts_generate")
        return StreamingResponse(chunks, media_type=encoder.media_type)

    @router.get("/voices", tags=["voices"], operation_id="listVoices")
    async def list_voices() -> list[str]:
        """Voice files available, as `<voice_id>.pth`."""
        return [v + VOICE_SUFFIX for v in await asyncio.to_thread(service.voices.list)]

    @router.post("/voices", status_code=201, tags=["voices"], operation_id="uploadVoice",
                 responses={201: {"links": links.UPLOADED}, **errors(400, 409, 413, 422)})
    async def upload_voice(
            file: UploadFile = File(..., description="A voice file named <voice_id>.pth (a saved "
                                    "Conditionals)."),
            voice_id: str | None = Query(None, max_length=VOICE_ID_MAX_CHARS, pattern=VOICE_ID_PATTERN,
                                         description="Store it under this voice id rather than the "
                                         "file's name."),
            overwrite: bool = Query(False, description="Replace an existing voice.")) -> UploadResponse:
        """Uploads a voice file: validated (name, size, weights-only read, structure) before it lands,
        atomically; a bad upload leaves nothing behind. A voice that a `Voice` resource manages is a
        409: change the resource instead."""
        # The file is always named <voice_id>.pth; ?voice_id= only stores it under another id.
        name = upload_file_name(file.filename or "")
        name = voice_id or name
        raw = await read_limited(file, MAX_VOICE_BYTES,
                                 f"voice file is larger than the {MAX_VOICE_BYTES}-byte limit")
        saved = await asyncio.to_thread(service.voices.save, name, raw, overwrite)
        log.info("voice %s uploaded (%d bytes)", saved, len(raw))
        return UploadResponse(voice_id=saved, message="Voice uploaded successfully.")

    clone_options = cloning.clone_options_dependency(max_tune_steps)

    @router.post("/voices/clone", tags=["voices"], operation_id="cloneVoice",
                 responses={201: {"model": CloneResponse, "description": "Cloned, and stored under "
                                  "voice_id."}, **errors(400, 409, 413, 422, 503)})
    async def clone_voice(
            response: Response,
            audio: list[UploadFile] = File(..., description="One or more recordings of one speaker (WAV, "
                                           "FLAC, MP3, Ogg; 1-5 minutes in all)."),
            voice_id: str | None = Query(None, max_length=VOICE_ID_MAX_CHARS, pattern=VOICE_ID_PATTERN,
                                         description="Store the voice under this id (201); left out, the "
                                         "voice is only returned (200), as the voice operator asks."),
            overwrite: bool = Query(False, description="Replace an existing voice."),
            options: cloning.CloneQuery = Depends(clone_options)) -> CloneResponse:
        """Clones a voice from recordings on the server's device, with the cloning tool's checks and
        code: same recordings and options, same file. Each recording that cannot be used is rejected
        with its reason (the report lists them); none usable is a 422 naming each. The work runs beside
        the engine, so speech keeps streaming meanwhile. A stored voice lands like an upload (atomic,
        a managed or existing id refused before any work)."""
        if voice_id:
            service.voices.check_writable(voice_id, overwrite)
        result = await cloning.clone(service, audio, options)
        report = CloneReport(**result.report)
        rejected = f"{len(result.rejections)} of {len(audio)} recordings rejected"
        if not voice_id:
            return CloneResponse(voice_id=None, stored=False, message=f"Voice cloned ({rejected}).",
                                 voice=cloning.encoded(result), report=report)
        saved = await asyncio.to_thread(service.voices.save, voice_id, result.voice, overwrite)
        log.info("voice %s cloned from %d recordings (%d bytes)", saved, len(audio), len(result.voice))
        response.status_code = 201
        return CloneResponse(voice_id=saved, stored=True, message=f"Voice cloned and stored ({rejected}).",
                             voice=cloning.encoded(result), report=report)

    @router.delete("/voices/{voice_id}", tags=["voices"], operation_id="deleteVoice",
                   responses=errors(404, 409, 422))
    async def delete_voice(voice_id: str = Path(..., max_length=VOICE_ID_MAX_CHARS, pattern=VOICE_ID_PATTERN,
                                                description="The voice id, with or without .pth."),
                           ) -> MessageResponse:
        """Deletes a voice file. A voice that a `Voice` resource manages is a 409: delete the resource."""
        name = await asyncio.to_thread(service.voices.delete, voice_id)
        log.info("voice %s deleted", name)
        return MessageResponse(message=f"Voice '{name}' deleted successfully.")

    @router.post("/voices/reload", tags=["voices"], operation_id="reloadVoices")
    async def reload_voices() -> ReloadResponse:
        """Rescans the voice directory now (the operator calls this after writing a file)."""
        result = await asyncio.to_thread(service.voices.scan)
        return ReloadResponse(voices=[v + VOICE_SUFFIX for v in result.voices], added=result.added,
                              removed=result.removed, changed=result.changed)

    return router
