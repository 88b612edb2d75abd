"""Generation settings of one request, their allowed ranges and the library's defaults (no torch here).

`RANGES` is the one place where a setting's limits are written: the API's request models put them in
the OpenAPI schema and validate with them (`api.protocol`), and `SamplingParams.validate` checks engine
callers that bypass the API (the benchmark, tests) against the same table.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, fields

from .errors import InvalidInput


@dataclass(frozen=True)
class Range:
    """Bounds of a numeric setting, named as pydantic's Field names them."""

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None

    def field_kwargs(self) -> dict:
        return {k: v for k, v in vars(self).items() if v is not None}

    def check(self, value) -> str | None:
        """None when `value` is inside; otherwise what it must be."""
        tests = (("gt", operator.gt, ">"), ("ge", operator.ge, ">="),
                 ("lt", operator.lt, "<"), ("le", operator.le, "<="))
        for name, ok, sign in tests:
            bound = getattr(self, name)
            if bound is not None and not ok(value, bound):
                return f"must be {sign} {bound:g}"
        return None


RANGES: dict[str, Range] = {
    # Below 0.01 logits / temperature overflows float32 into inf and NaN probabilities (found by fuzzing);
    # 0.01 is already greedy in effect. Above ~2 the sampler is noise; 5 leaves room to experiment.
    "temperature": Range(ge=0.01, le=5),
    "top_p": Range(gt=0, le=1),
    "min_p": Range(ge=0, lt=1),
    "top_k": Range(ge=1, le=50_000),  # the speech vocabulary has 6561 + specials; larger changes nothing
    "repetition_penalty": Range(ge=1, le=10),
    "cfg_weight": Range(ge=0, le=5),
    "exaggeration": Range(ge=0, le=2),
    "max_new_tokens": Range(ge=1, le=100_000),  # the server's token cap applies on top of this
    "seed": Range(ge=0, le=2**31 - 1),  # torch.Generator seeds; 31 bits keep JSON clients exact
}


@dataclass(frozen=True)
class SamplingParams:
    """Generation settings of one request; None takes the variant's library default."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    """Turbo only."""
    min_p: float | None = None
    """English and Multilingual only."""
    repetition_penalty: float | None = None
    cfg_weight: float | None = None
    """Classifier-free guidance weight; English and Multilingual only (0 turns it off)."""
    exaggeration: float | None = None
    """Emotion exaggeration; English and Multilingual only."""
    max_new_tokens: int | None = None
    """Cap on speech tokens per text piece (25 tokens are a second of audio)."""

    def resolved(self, defaults: SamplingParams, token_cap: int) -> SamplingParams:
        """Every None replaced by `defaults` (the variant's), the token count capped at `token_cap`."""
        values = {f.name: getattr(self, f.name) if getattr(self, f.name) is not None
                  else getattr(defaults, f.name) for f in fields(self)}
        values["max_new_tokens"] = min(values["max_new_tokens"], token_cap)
        params = SamplingParams(**values)
        params.validate()
        return params

    def validate(self) -> None:
        """Raises InvalidInput naming the first value out of `RANGES`; None (the default) always passes."""
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and (problem := RANGES[f.name].check(value)):
                raise InvalidInput(f"{f.name} {problem}")


# The defaults of ChatterboxTurboTTS.generate, ChatterboxTTS.generate and
# ChatterboxMultilingualTTS.generate in chatterbox-tts 0.1.7.
TURBO_DEFAULTS = SamplingParams(temperature=0.8, top_p=0.95, top_k=1000, min_p=0.0, repetition_penalty=1.2,
                                cfg_weight=0.0, exaggeration=0.0, max_new_tokens=1000)
ENGLISH_DEFAULTS = SamplingParams(temperature=0.8, top_p=1.0, top_k=1000, min_p=0.05,
                                  repetition_penalty=1.2, cfg_weight=0.5, exaggeration=0.5,
                                  max_new_tokens=1000)
# The multilingual generate() differs from English's only in its repetition penalty.
MULTILINGUAL_DEFAULTS = SamplingParams(temperature=0.8, top_p=1.0, top_k=1000, min_p=0.05,
                                       repetition_penalty=2.0, cfg_weight=0.5, exaggeration=0.5,
                                       max_new_tokens=1000)
