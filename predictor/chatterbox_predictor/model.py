"""The KServe model: builds the engine and the voice library, reports ready once warm, answers V1 and V2.

Importing this module imports kserve, whose model_server module parses sys.argv at import time: only
`__main__` imports it, never a module that tests import.

- V1 `/v1/models/{name}:predict`: `{"instances": [{"text": ..., "voice_id": ..., <options>}]}` ->
  `{"predictions": [{"wav_base64": ..., "sample_rate": 24000, "duration_s": ...}]}`.
- V2 / Open Inference Protocol `/v2/models/{name}/infer`: the inputs and outputs that
  `GET /v2/models/{name}` lists (`api.kserve_v2`): a BYTES `text`, optional one-element option tensors
  (or request parameters); outputs `audio` (FP32 samples at 24 kHz) and `wav` (BYTES, one WAV file; ask
  for it with `"binary_data": true` to get raw bytes after the JSON, KServe's binary extension).
"""

from __future__ import annotations

import base64
import logging
import time
import uuid

import kserve
import numpy as np
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from .api import metrics
from .api.kserve_v2 import V2_INPUTS, V2_OUTPUTS, parse_v1, parse_v2
from .audio import wav_bytes
from .checkpoints import resolve_checkpoint
from .cloner import Cloner
from .engine import Engine, EngineConfig, SynthesisRequest
from .loading import resolve_device
from .settings import PredictorSettings
from .voice_directory import VoiceDirectory
from .voices import VoiceCache, VoiceLibrary

log = logging.getLogger(__name__)


class ChatterboxModel(kserve.Model):
    """`tts_engine` is ours; KServe's own `engine` attribute means something else (an engine KServe
    starts itself) and stays False."""

    def __init__(self, name: str, settings: PredictorSettings):
        super().__init__(name)
        self.settings = settings
        self.tts_engine: Engine | None = None
        self.voices: VoiceDirectory | None = None
        self.cloner: Cloner | None = None

    def load(self) -> bool:
        started = time.monotonic()
        settings = self.settings
        config = EngineConfig.from_settings(settings)
        device = resolve_device(settings.device)
        # One voice library for the engine (reads) and the API (writes, listing, the watcher).
        library = VoiceLibrary(settings.voices_dir, config.variant, device,
                               VoiceCache(settings.voice_cache_mb * 2**20))
        # Found (or, for random weights, built) on the engine's thread: this one must not run the model.
        self.tts_engine = Engine.load(lambda: resolve_checkpoint(settings), config, device, library)
        self.voices = VoiceDirectory(library, scan_interval=settings.voice_scan_interval)
        self.voices.start()
        self.tts_engine.start()
        self.cloner = Cloner(self.tts_engine.model, config.variant, settings.clone_max_pending)
        metrics.register_engine(self.tts_engine)
        log.info("loaded and warmed up Chatterbox %s from %s on %s in %.1f s", settings.variant,
                 self.tts_engine.checkpoint_dir, device, time.monotonic() - started)
        self.ready = True
        return self.ready

    def stop(self, wait: bool = False) -> None:
        """Stops the voice watcher, the cloner and the engine. KServe calls this on unload and from its
        signal handler, both on the event loop, so by default nothing is joined (the threads exit by
        themselves within a token, a scan or a clone); `wait` joins them (at process exit)."""
        self.ready = False
        if self.voices is not None:
            self.voices.stop(wait)
        if self.cloner is not None:
            self.cloner.stop(wait)
        if self.tts_engine is not None:
            self.tts_engine.stop(wait)

    def get_input_types(self) -> list[dict]:
        return [t.metadata() for t in V2_INPUTS]

    def get_output_types(self) -> list[dict]:
        return [t.metadata() for t in V2_OUTPUTS]

    async def _speak(self, request: SynthesisRequest, endpoint: str) -> np.ndarray:
        metrics.REQUESTS.labels(endpoint).inc()
        started = time.monotonic()
        chunks = [chunk.audio async for chunk in self.tts_engine.stream(request)]
        audio = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
        if len(audio):
            seconds = len(audio) / Engine.sample_rate
            metrics.AUDIO_SECONDS.labels(endpoint).inc(seconds)
            metrics.RTF.labels(endpoint).observe((time.monotonic() - started) / seconds)
        return audio

    async def predict(self, payload, headers=None, response_headers=None):
        if isinstance(payload, InferRequest):
            return await self._predict_v2(payload)
        return await self._predict_v1(payload)

    async def _predict_v1(self, payload) -> dict:
        predictions = []
        rate = Engine.sample_rate
        for request in parse_v1(payload):
            audio = await self._speak(request, "kserve_v1")
            predictions.append({"wav_base64": base64.b64encode(wav_bytes(audio, rate)).decode(),
                                "sample_rate": rate, "duration_s": len(audio) / rate})
        return {"predictions": predictions}

    async def _predict_v2(self, request: InferRequest) -> InferResponse:
        parsed = parse_v2(request)
        audio = await self._speak(parsed.synthesis, "kserve_v2")
        outputs = []
        if "audio" in parsed.outputs:
            outputs.append(InferOutput("audio", [len(audio)], "FP32", data=audio.astype(np.float32),
                                       parameters={"sample_rate": Engine.sample_rate}))
        if "wav" in parsed.outputs:  # binary: ask with "binary_data": true
            wav = np.array([wav_bytes(audio, Engine.sample_rate)], dtype=np.object_)
            outputs.append(InferOutput("wav", [1], "BYTES", data=wav))
        return InferResponse(response_id=request.id or str(uuid.uuid4()), model_name=self.name,
                             infer_outputs=outputs, use_binary_outputs=request.use_binary_outputs,
                             requested_outputs=request.request_outputs)
