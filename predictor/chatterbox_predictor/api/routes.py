"""The plan's REST API: `/tts/generate`, `/voices`, and the container's `/health`. Thin: each route
validates through `protocol`, calls the service or the voice directory, and shapes the answer."""

import asyncio
import logging

from chatterbox_voicefile import MAX_VOICE_BYTES, VOICE_SUFFIX
from fastapi import APIRouter, Depends, File, Path, Query, UploadFile
from fastapi.responses import StreamingResponse

from ..audio import MEDIA_TYPES, AudioEncoder
from ..errors import InvalidInput, PayloadTooLarge
from ..voice_directory import upload_file_name
from . import cloning
from .protocol import (
    VOICE_ID_MAX_CHARS,
    VOICE_ID_PATTERN,
    ClonedVoice,
    CloneReport,
    CloneResponse,
    GenerateRequest,
    HealthResponse,
    MessageResponse,
    ReloadResponse,
    UploadResponse,
)
from .service import TTSService
from .spec import errors, links

log = logging.getLogger(__name__)

AUDIO_TYPES = sorted(set(MEDIA_TYPES.values()))


def rest_router(service: TTSService, generate_model: type[GenerateRequest] = GenerateRequest) -> APIRouter:
    """`generate_model` is `GenerateRequest` with the server's text limit (`protocol.with_text_limit`)."""
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
        encoder = AudioEncoder(body.format, service.sample_rate)
        chunks = await service.audio(body.synthesis(), encoder, "tts_generate")
        return StreamingResponse(chunks, media_type=encoder.media_type)

    @router.get("/voices", tags=["voices"], operation_id="listVoices")
    async def list_voices() -> list[str]:
        """Voice files available, as `<voice_id>.pth`."""
        return [v + VOICE_SUFFIX for v in await asyncio.to_thread(service.voices.list)]

    @router.post("/voices", status_code=201, tags=["voices"], operation_id="uploadVoice",
                 responses={201: {"links": links.UPLOADED}, **errors(400, 409, 413, 422, 503)})
    async def upload_voice(
            file: UploadFile | None = File(None, description="A voice file named <voice_id>.pth (a saved "
                                           "Conditionals)."),
            audio: list[UploadFile] | None = File(None, description="Instead of `file`: one or more "
                                                  "recordings of one speaker (WAV, FLAC, MP3, Ogg) to "
                                                  "clone the voice from; needs ?voice_id=."),
            voice_id: str | None = Query(None, max_length=VOICE_ID_MAX_CHARS, pattern=VOICE_ID_PATTERN,
                                         description="Store it under this voice id rather than the "
                                         "file's name (required when cloning)."),
            overwrite: bool = Query(False, description="Replace an existing voice."),
            options: dict = Depends(cloning.clone_options)) -> UploadResponse | CloneResponse:
        """Uploads a voice file, or clones one from recordings. A file is validated (name, size,
        weights-only read, structure) before it lands, atomically; a bad upload leaves nothing behind.
        Recordings are checked one by one (the answer says which were rejected and why), cloned on the
        server's device, and the voice is stored the same way. A voice that a `Voice` resource manages
        is a 409: change the resource instead."""
        if (file is None) == (not audio):
            raise InvalidInput("give either file (a <voice_id>.pth) or audio (recordings to clone from)")
        if audio:
            if not voice_id:
                raise InvalidInput("cloning needs ?voice_id= (the name of the new voice)")
            service.voices.check_writable(voice_id, overwrite)  # refuse before the work, not after
            result = await cloning.clone(service, audio, options)
            saved = await asyncio.to_thread(service.voices.save, voice_id, result.voice, overwrite)
            log.info("voice %s cloned from %d recordings (%d bytes)", saved, len(audio), len(result.voice))
            return CloneResponse(voice_id=saved, message=f"Voice cloned from {len(audio)} recordings "
                                 f"({len(result.rejections)} rejected).",
                                 report=CloneReport(**result.report))
        # The file is always named <voice_id>.pth; ?voice_id= only stores it under another id.
        name = upload_file_name(file.filename or "")
        name = voice_id or name
        raw = await _read_limited(file, MAX_VOICE_BYTES)
        saved = await asyncio.to_thread(service.voices.save, name, raw, overwrite)
        log.info("voice %s uploaded (%d bytes)", saved, len(raw))
        return UploadResponse(voice_id=saved, message="Voice uploaded successfully.")

    @router.post("/voices/clone", tags=["voices"], operation_id="cloneVoice",
                 responses=errors(400, 413, 422, 503))
    async def clone_voice(
            audio: list[UploadFile] = File(..., description="One or more recordings of one speaker (WAV, "
                                           "FLAC, MP3, Ogg)."),
            options: dict = Depends(cloning.clone_options)) -> ClonedVoice:
        """Clones a voice from recordings and returns the voice file, without storing it (the voice
        operator's `clone` source stores it itself). Same recordings and options, same file."""
        result = await cloning.clone(service, audio, options)
        return ClonedVoice(voice=cloning.encoded(result), report=CloneReport(**result.report))

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


async def _read_limited(file: UploadFile, limit: int) -> bytes:
    data = bytearray()
    while chunk := await file.read(1 << 20):
        data += chunk
        if len(data) > limit:
            raise PayloadTooLarge(f"voice file is larger than the {limit}-byte limit")
    return bytes(data)
