"""Request and response models of every protocol the predictor speaks, with their field docs and limits.

Fields are ordered as each public API orders them, and each carries its description and range, so the
OpenAPI document (/openapi.json, /docs) says everything validation enforces: a request the schema allows
is not refused for its shape. Ranges come from `sampling.RANGES`, the one table the engine checks too.

`GenerationOptions.synthesis_request(text, voice_id)` is the one way any protocol (REST, OpenAI, the
WebSocket, KServe V1 and V2) turns its request into the engine's `SynthesisRequest`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from ..audio import FORMATS
from ..engine import SynthesisRequest
from ..sampling import RANGES, SamplingParams
from ..settings import PredictorSettings

DEFAULT_MAX_TEXT_CHARS = PredictorSettings.model_fields["max_text_chars"].default
"""Longest text of a request unless the server's --max_text_chars says otherwise (`with_text_limit`)."""
DEFAULT_MAX_TUNE_STEPS = PredictorSettings.model_fields["clone_max_tune_steps"].default
"""Most tuning steps of a clone unless the server's --clone_max_tune_steps says otherwise."""

# A voice id: 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit, never two dots in a
# row (so never a path); with or without the .pth suffix; empty for the model's built-in voice. Written
# without look-arounds, so that schema-driven clients and fuzzers can generate from it.
VOICE_ID_PATTERN = r"^([A-Za-z0-9](\.?[A-Za-z0-9_-])*\.?)?$"
VOICE_ID_MAX_CHARS = 100


def _ranged(name: str, description: str, **extra):
    return Field(None, description=description, **RANGES[name].field_kwargs(), **extra)


_NUMBERS = frozenset({*RANGES, "speed"})

def _text_field(max_chars: int, description: str):
    """A text to speak: at least one character that is not white space, at most `max_chars`."""
    return Field(..., min_length=1, max_length=max_chars, pattern=r"\S", description=description)


VoiceId = Annotated[str, Field(max_length=VOICE_ID_MAX_CHARS, pattern=VOICE_ID_PATTERN)]


def _speed_field():
    """Playback speed, applied to the audio as it streams (FFmpeg's atempo, `audio.AudioEncoder`)."""
    return Field(1.0, ge=0.25, le=4.0, description="Playback speed (pitch kept).")


class GenerationOptions(BaseModel):
    """Optional generation settings shared by every protocol; a field left out (or null) takes the
    variant's library default."""

    model_config = ConfigDict(extra="forbid")

    seed: int | None = _ranged("seed", "Same seed, same speech (with the same text, voice and options).")
    language: str | None = Field(None, min_length=2, max_length=8, pattern=r"^[A-Za-z-]+$",
                                 description="Language id, e.g. 'fr' (multilingual variant; required there).")
    temperature: float | None = _ranged("temperature", "Sampling temperature of the speech tokens.")
    top_p: float | None = _ranged("top_p", "Nucleus sampling: keep the most likely tokens up to this "
                                  "probability mass.")
    top_k: int | None = _ranged("top_k", "Keep the k most likely tokens (Turbo only).")
    min_p: float | None = _ranged("min_p", "Drop tokens below this fraction of the top probability "
                                  "(English and Multilingual only).")
    repetition_penalty: float | None = _ranged("repetition_penalty", "Penalty on speech tokens already "
                                               "spoken (1: none).")
    cfg_weight: float | None = _ranged("cfg_weight", "Classifier-free guidance weight (English and "
                                       "Multilingual only; 0 turns it off).")
    exaggeration: float | None = _ranged("exaggeration", "Emotion exaggeration (English and Multilingual "
                                         "only).")
    max_new_tokens: int | None = _ranged("max_new_tokens", "Cap on speech tokens per sentence group (25 "
                                         "tokens = 1 s); the server's token cap still applies.")

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value, info):
        """JSON false is not the number 0 (pydantic's lax mode would take it; the schema says number).
        Lax mode stays for the rest: JSON Schema's integer 3.0 is an integer."""
        if isinstance(value, bool) and info.field_name in _NUMBERS:
            raise ValueError("must be a number, not a boolean")
        return value

    def params(self) -> SamplingParams:
        return SamplingParams(**{k: getattr(self, k) for k in SamplingParams.__dataclass_fields__})

    def synthesis_request(self, text: str, voice_id: str | None) -> SynthesisRequest:
        """The engine's request for `text` in `voice_id` (None or "": the built-in voice)."""
        return SynthesisRequest(text, voice_id=voice_id or None, params=self.params(), seed=self.seed,
                                language=self.language)


class GenerateRequest(GenerationOptions):
    """`POST /tts/generate`: the plan's body (`text`, `voice_id`), plus options."""

    text: str = _text_field(DEFAULT_MAX_TEXT_CHARS, "Text to speak (at least one character that is not "
                            "white space).")
    voice_id: VoiceId | None = Field(None, description="Voice file under /voices, with or without .pth; "
                                     "empty or absent for the model's built-in voice.")
    format: Literal[FORMATS] = Field("wav", description="Audio format of the response.")
    speed: float = _speed_field()

    def synthesis(self) -> SynthesisRequest:
        return self.synthesis_request(self.text, self.voice_id)


class StreamOptions(GenerationOptions):
    """The options of a `/tts/stream` session: the generation's, and the playback speed."""

    speed: float = _speed_field()


OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer",
                 "verse", "marin", "cedar")
"""OpenAI's built-in voice names: existing clients send one of these; they get the built-in voice unless a
voice file of that name exists."""


class SpeechRequest(GenerationOptions):
    """OpenAI's `POST /v1/audio/speech` body, plus our generation options as extensions."""

    model_config = ConfigDict(extra="allow")  # future OpenAI fields must not break existing clients

    model: str = Field(..., max_length=200, description="Accepted and ignored: this server serves one "
                       "model (OpenAI clients must send one).")
    input: str = _text_field(DEFAULT_MAX_TEXT_CHARS, "Text to speak.")
    voice: VoiceId = Field(..., description="A voice id, or one of OpenAI's voice names (or 'default') "
                           "for the model's built-in voice.")
    instructions: str | None = Field(None, max_length=4096, description="Accepted and ignored: Chatterbox "
                                     "takes no style prompt (use exaggeration on the English variant).")
    response_format: Literal[FORMATS] = Field("mp3", description="Audio format of the response.")
    speed: float = _speed_field()
    stream_format: Literal["audio", "sse"] = Field("audio", description="Raw audio, or server-sent events "
                                                   "with base64 audio deltas.")


def with_text_limit(model: type[BaseModel], field: str, max_chars: int) -> type[BaseModel]:
    """`model` with `field` limited to `max_chars` characters (the server's --max_text_chars), so that the
    schema states the limit the server enforces. Same name, so the OpenAPI document keeps its names."""
    if max_chars == DEFAULT_MAX_TEXT_CHARS:
        return model
    info = model.model_fields[field]
    return create_model(model.__name__, __base__=model, __doc__=model.__doc__,
                        **{field: (info.annotation, _text_field(max_chars, info.description))})


# -- responses ---------------------------------------------------------------------------------------
class ErrorDetail(BaseModel):
    """Every error the server decides itself: one sentence saying what is wrong."""

    detail: str


class UploadResponse(BaseModel):
    voice_id: str = Field(..., description="The voice's file name, `<voice_id>.pth`.")
    message: str


class MessageResponse(BaseModel):
    message: str


class ReloadResponse(BaseModel):
    voices: list[str] = Field(..., description="Voice files after the scan.")
    added: list[str] = Field(..., description="Voice ids that appeared since the last scan.")
    removed: list[str] = Field(..., description="Voice ids that went away.")
    changed: list[str] = Field(..., description="Voice ids whose file was replaced.")


class HealthResponse(BaseModel):
    status: Literal["ok"]
    ready: bool = Field(..., description="Whether the model serves yet.")
    variant: str
    device: str


class OpenAIVoice(BaseModel):
    id: str
    object: Literal["voice"] = "voice"


class OpenAIVoiceList(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIVoice]




# -- cloning -----------------------------------------------------------------------------------------
class RejectedRecording(BaseModel):
    file: str = Field(..., description="The recording's file name as uploaded.")
    reason: str = Field(..., description="Why it was left out (too short, clipped, silent, several "
                        "channels, noisy, not decodable).")


class ClonedSegment(BaseModel):
    file: str
    start_s: float = Field(..., description="Where the segment starts in its recording.")
    end_s: float
    duration_s: float
    similarity: float = Field(..., description="Cosine similarity of its voice-encoder embedding to the "
                              "voice's speaker embedding.")
    reference: bool = Field(..., description="Part of the prompt and decoder reference (the best segments).")


class CloneReport(BaseModel):
    """What a clone was made of and how good it is: the cloning tool's sidecar, less the file's name."""

    model_config = ConfigDict(extra="allow")  # recordings, notes, timings: informative, not a contract

    variant: str
    sha256: str = Field(..., description="SHA-256 of the voice file.")
    bytes: int
    total_duration_s: float = Field(..., description="Seconds of speech in the segments used.")
    segments: list[ClonedSegment]
    rejected: list[RejectedRecording]
    quality: dict[str, float] = Field(..., description="speaker_similarity_mean and _min; with tuning, "
                                      "held_out_loss_before and _after.")
    tune: dict | None = Field(None, description="The tuning run (steps, losses), when one was asked for.")


class CloneResponse(BaseModel):
    """`POST /voices/clone`: the voice file, stored under `voice_id` when one was given."""

    voice_id: str | None = Field(..., description="The stored voice's file name, `<voice_id>.pth`; null "
                                 "when it was not stored.")
    stored: bool
    message: str
    voice: str = Field(..., description="The voice file (.pth), base64.")
    report: CloneReport
