"""Cloning over HTTP (`POST /voices/clone`): recordings in a multipart body, the tool's pipeline on the
server.

A sibling of the plan's `POST /voices`, whose `file` upload keeps its shape: with `?voice_id=` the
clone is stored like an uploaded file; without, it is only returned (the voice operator verifies and
syncs it itself). Either way the answer holds the file and says what was rejected and why. The options
are query parameters, as `voice_id` and `overwrite` are; the limits are the server's settings.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from fastapi import Query, UploadFile

from ..cloning.pipeline import CloneOptions, CloneResult, Source
from ..cloning.tuning import TuneOptions
from ..errors import InvalidInput
from .service import TTSService, read_limited


def clone_options_dependency(max_tune_steps: int):
    """The options as query parameters, with the server's cap on tuning steps in their schema."""

    def clone_options(
            exaggeration: float = Query(0.5, ge=0, le=2, description="Emotion exaggeration stored in the "
                                        "voice."),
            tune: bool = Query(False, description="Fine-tune the speaker embedding on the recordings "
                               "(needs two segments or more; refused where --clone_max_tune_steps is 0)."),
            tune_steps: int = Query(min(50, max(max_tune_steps, 1)), ge=1, le=max(max_tune_steps, 1),
                                    description="Tuning steps (at most this server's "
                                    "--clone_max_tune_steps)."),
            tune_lr: float = Query(0.002, gt=0, le=1, description="Tuning learning rate."),
            seed: int = Query(0, ge=0, lt=2**31, description="Seed of the held-out split (same inputs and "
                              "seed, same file)."),
            language: str | None = Query(None, min_length=2, max_length=8, pattern=r"^[A-Za-z-]+$",
                                         description="Language of transcripts (multilingual tuning)."),
    ) -> CloneQuery:
        return CloneQuery(CloneOptions(exaggeration=exaggeration, tune=TuneOptions(
            steps=tune_steps, learning_rate=tune_lr, seed=seed, language=language) if tune else None))

    return clone_options


@dataclass(frozen=True)
class CloneQuery:
    """The options a request asked for; `checked(service)` holds them against what this server allows
    (the schema cannot: the variant and a zero tuning cap are known only with the service)."""

    options: CloneOptions

    def checked(self, service: TTSService) -> CloneOptions:
        tune = self.options.tune
        if tune is not None:
            if service.settings.clone_max_tune_steps == 0:
                raise InvalidInput("this server does not fine-tune voices (--clone_max_tune_steps 0): "
                                   "clone without tune, or tune offline with the cloning tool")
            if service.engine.variant.needs_language and not tune.language:
                raise InvalidInput(f"tuning a {service.engine.variant.name} voice needs ?language= (the "
                                   "language of the recordings' transcripts)")
        return self.options


async def read_recordings(files: list[UploadFile], limit: int) -> list[Source]:
    """The uploaded recordings, at most `limit` bytes in all (the rest is never read)."""
    if len(files) > 50:
        raise InvalidInput(f"{len(files)} recordings; give at most 50 (1-5 minutes of speech is enough)")
    sources, total = [], 0
    for n, upload in enumerate(files):
        data = await read_limited(upload, limit - total, f"the recordings are larger than the {limit}-byte "
                                  "limit (--clone_max_upload_mb)")
        total += len(data)
        name = (upload.filename or f"recording-{n + 1}").replace("/", "_").replace("\\", "_")[:200]
        sources.append(Source(name, bytes(data)))
    return sources


async def clone(service: TTSService, files: list[UploadFile], query: CloneQuery) -> CloneResult:
    options = query.checked(service)
    limit = service.settings.clone_max_upload_mb * 2**20
    return await service.cloner.clone(await read_recordings(files, limit), options)


def encoded(result: CloneResult) -> str:
    return base64.b64encode(result.voice).decode()
