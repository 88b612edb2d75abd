"""What every protocol's routes share: the engine, the voice directory, the cloner, and audio streamed as
it is made.

`TTSService.audio` starts a generation and waits for its first chunk, so every error that can happen
before audio exists (unknown voice, bad text, full queue) becomes an HTTP error rather than a broken
stream; the rest is encoded chunk by chunk while it is generated, and a client that goes away closes
the iterator, which cancels the generation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

from ..audio import AudioEncoder
from ..cloner import Cloner
from ..engine import Engine, SynthesisRequest
from ..errors import EngineError, PayloadTooLarge
from ..settings import PredictorSettings
from ..voice_directory import VoiceDirectory
from . import metrics
from .protocol import OPENAI_VOICES

log = logging.getLogger(__name__)


class TTSService:
    def __init__(self, engine: Engine, voices: VoiceDirectory, cloner: Cloner,
                 settings: PredictorSettings | None = None):
        self.engine = engine
        self.voices = voices
        self.cloner = cloner
        self.settings = settings if settings is not None else PredictorSettings()

    @property
    def sample_rate(self) -> int:
        return self.engine.sample_rate

    def resolve_openai_voice(self, voice: str) -> str | None:
        """A voice file of that name, else the built-in voice for OpenAI's names and "default"; any
        other name stays as it is, for the engine to refuse like every unknown voice."""
        if voice.lower() in (*OPENAI_VOICES, "default", "") and not self.engine.voices.exists(voice):
            return None
        return voice

    async def audio(self, request: SynthesisRequest, encoder: AudioEncoder, endpoint: str,
                    ) -> AsyncIterator[bytes]:
        """The encoded audio of `request` as it comes, once its first chunk exists (see the module)."""
        started = time.monotonic()
        log.info("%s: %d characters, voice %s", endpoint, len(request.text), request.voice_id or "(built-in)")
        metrics.REQUESTS.labels(endpoint).inc()
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
                metrics.AUDIO_SECONDS.labels(endpoint).inc(audio_s)
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


async def read_limited(upload, limit: int, too_large: str) -> bytes:
    """An uploaded file's bytes, read a megabyte at a time; past `limit` bytes it stops reading and
    raises PayloadTooLarge(`too_large`) (the rest is never buffered)."""
    data = bytearray()
    while chunk := await upload.read(1 << 20):
        data += chunk
        if len(data) > limit:
            raise PayloadTooLarge(too_large)
    return bytes(data)
