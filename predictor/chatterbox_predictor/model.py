"""The KServe model: loads the engine, reports ready once it is warm, and answers V1 and V2 inference.

Importing this module imports kserve, whose model_server module parses sys.argv at import time: only
`__main__.main()` imports it, never a module that tests import.

- V1 `/v1/models/{name}:predict`: `{"instances": [{"text": ..., "voice_id": ..., <options>}]}` ->
  `{"predictions": [{"wav_base64": ..., "sample_rate": 24000, "duration_s": ...}]}`.
- V2 / Open Inference Protocol `/v2/models/{name}/infer`: a BYTES input `text` (one element), options
  as request parameters (`voice_id`, `seed`, `temperature`, ...). Outputs: `audio` (FP32 samples at
  24 kHz) and `wav` (BYTES, one WAV file); ask for `wav` with `"binary_data": true` to get the file as
  raw bytes after the JSON (KServe's binary tensor extension).
"""

from __future__ import annotations

import base64
import logging
import time
import uuid

import kserve
import numpy as np
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
from pydantic import ValidationError

from .audio import wav_bytes
from .engine import Engine, EngineConfig, SynthesisRequest
from .errors import InvalidInput
from .loading import resolve_checkpoint, resolve_device
from .server import GenerationOptions
from .settings import PredictorSettings

log = logging.getLogger(__name__)


def engine_config(settings: PredictorSettings) -> EngineConfig:
    return EngineConfig(variant=settings.variant, voices_dir=settings.voices_dir, dtype=settings.dtype,
                        watermark=settings.watermark, queue_size=settings.queue_size,
                        voice_cache_bytes=settings.voice_cache_mb * 2**20,
                        max_text_chars=settings.max_text_chars, token_cap=settings.token_cap)


class ChatterboxModel(kserve.Model):
    def __init__(self, name: str, settings: PredictorSettings):
        super().__init__(name)
        self.settings = settings
        self.engine: Engine | None = None

    def load(self) -> bool:
        started = time.monotonic()
        directory = resolve_checkpoint(self.settings)
        device = resolve_device(self.settings.device)
        self.engine = Engine.load(directory, engine_config(self.settings), device)
        self.engine.start()
        log.info("loaded and warmed up Chatterbox %s from %s on %s in %.1f s", self.settings.variant,
                 directory, device, time.monotonic() - started)
        self.ready = True
        return self.ready

    async def _speak(self, text: str, options: dict) -> np.ndarray:
        try:
            opts = GenerationOptions(**{k: v for k, v in options.items() if k != "voice_id"})
        except ValidationError as exc:
            raise InvalidInput(f"invalid parameters: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") \
                from None
        voice = options.get("voice_id")
        if voice is not None and not isinstance(voice, str):
            raise InvalidInput("voice_id must be a string")
        request = SynthesisRequest(text, voice_id=voice or None, params=opts.params(), seed=opts.seed,
                                   language=opts.language)
        chunks = [chunk.audio async for chunk in self.engine.stream(request)]
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)

    async def predict(self, payload, headers=None, response_headers=None):
        if isinstance(payload, InferRequest):
            return await self._predict_v2(payload)
        return await self._predict_v1(payload)

    async def _predict_v1(self, payload) -> dict:
        instances = payload.get("instances") if isinstance(payload, dict) else None
        if not isinstance(instances, list) or not instances:
            raise InvalidInput('expected {"instances": [{"text": ..., "voice_id": ...}]}')
        predictions = []
        for instance in instances:
            if isinstance(instance, str):
                instance = {"text": instance}
            if not isinstance(instance, dict) or not isinstance(instance.get("text"), str):
                raise InvalidInput("each instance must be a string or an object with a string 'text'")
            options = dict(instance)
            audio = await self._speak(options.pop("text"), options)
            rate = Engine.sample_rate
            predictions.append({"wav_base64": base64.b64encode(wav_bytes(audio, rate)).decode(),
                                "sample_rate": rate, "duration_s": len(audio) / rate})
        return {"predictions": predictions}

    async def _predict_v2(self, request: InferRequest) -> InferResponse:
        text_input = request.get_input_by_name("text")
        if text_input is None or text_input.datatype != "BYTES":
            raise InvalidInput("expected a BYTES input named 'text'")
        values = text_input.as_numpy().reshape(-1)
        if len(values) != 1:
            raise InvalidInput("the 'text' input must hold exactly one element")
        text = values[0].decode("utf-8", "replace") if isinstance(values[0], bytes) else str(values[0])
        options = {**(request.parameters or {}), **(text_input.parameters or {})}
        options = {k: v for k, v in options.items() if k not in ("binary_data_output", "binary_data",
                                                                  "binary_data_size", "content_type")}
        wanted = {o.name for o in request.request_outputs or []} or {"audio"}  # the WAV only on request
        if unknown := wanted - {"audio", "wav"}:
            raise InvalidInput(f"unknown outputs {sorted(unknown)}: this model has 'audio' and 'wav'")
        audio = await self._speak(text, options)
        outputs = []
        if "audio" in wanted:
            outputs.append(InferOutput("audio", [len(audio)], "FP32", data=audio.astype(np.float32),
                                       parameters={"sample_rate": Engine.sample_rate}))
        if "wav" in wanted:  # binary: ask with "binary_data": true
            wav = np.array([wav_bytes(audio, Engine.sample_rate)], dtype=np.object_)
            outputs.append(InferOutput("wav", [1], "BYTES", data=wav))
        return InferResponse(response_id=request.id or str(uuid.uuid4()), model_name=self.name,
                             infer_outputs=outputs, use_binary_outputs=request.use_binary_outputs,
                             requested_outputs=request.request_outputs)
