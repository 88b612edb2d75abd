"""T3 speech-token decoding, one token at a time, with the library's sampling semantics.

`T3Stream` holds everything one request's decoding needs (KV cache, tokens so far, sampler state,
random generator), so that the engine can interleave requests and, later, step several together.
Compared with the library's loops it asks the transformer for nothing it does not use: no attention
maps (which force eager attention instead of SDPA) and no hidden states of every layer, and the speech
head runs on the last position only. The sampling is the library's, step for step:

- Turbo (GPT-2): temperature, top-k, top-p, then repetition penalty (transformers' processors, in the
  order `inference_turbo` applies them); the first token is sampled after the prefill.
- English / Multilingual (Llama): classifier-free guidance `cond + w * (cond - uncond)` over a batch of
  two (the second with its text embeddings zeroed), repetition penalty, temperature, min-p, top-p; the
  start-of-speech embedding follows the conditioning exactly as `T3.inference` feeds it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers.generation.logits_process import (
    LogitsProcessorList,
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from .errors import InvalidInput


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

    def resolved(self, variant: str, token_cap: int) -> SamplingParams:
        base = TURBO_DEFAULTS if variant == "turbo" else ENGLISH_DEFAULTS
        values = {k: getattr(self, k) if getattr(self, k) is not None else getattr(base, k)
                  for k in self.__dataclass_fields__}
        values["max_new_tokens"] = min(values["max_new_tokens"], token_cap)
        params = SamplingParams(**values)
        params.validate()
        return params

    def validate(self) -> None:
        checks = [
            (self.temperature is not None and self.temperature > 0, "temperature must be > 0"),
            (self.top_p is not None and 0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (self.min_p is not None and 0 <= self.min_p < 1, "min_p must be in [0, 1)"),
            (self.top_k is not None and self.top_k >= 1, "top_k must be >= 1"),
            (self.repetition_penalty is not None and 1 <= self.repetition_penalty <= 10,
             "repetition_penalty must be in [1, 10]"),
            (self.cfg_weight is not None and 0 <= self.cfg_weight <= 5, "cfg_weight must be in [0, 5]"),
            (self.exaggeration is not None and 0 <= self.exaggeration <= 2, "exaggeration must be in [0, 2]"),
            (self.max_new_tokens is not None and self.max_new_tokens >= 1, "max_new_tokens must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise InvalidInput(message)


# The defaults of ChatterboxTurboTTS.generate and ChatterboxTTS.generate in chatterbox-tts 0.1.7.
TURBO_DEFAULTS = SamplingParams(temperature=0.8, top_p=0.95, top_k=1000, min_p=0.0, repetition_penalty=1.2,
                                cfg_weight=0.0, exaggeration=0.0, max_new_tokens=1000)
ENGLISH_DEFAULTS = SamplingParams(temperature=0.8, top_p=1.0, top_k=1000, min_p=0.05,
                                  repetition_penalty=1.2, cfg_weight=0.5, exaggeration=0.5,
                                  max_new_tokens=1000)


class T3Stream:
    """One request's T3 decoding: `next_token()` until it returns None (end of speech or the cap)."""

    def __init__(self, t3, variant: str, t3_cond, text_tokens: torch.Tensor, params: SamplingParams,
                 generator: torch.Generator):
        self.t3 = t3
        self.turbo = variant == "turbo"
        self.params = params
        self.generator = generator
        self.stop_token = t3.hp.stop_speech_token
        self.generated: list[int] = []
        self.done = False
        self._pending = None  # the next logits, computed lazily
        self._past = None
        if self.turbo:
            self._prefill_turbo(t3_cond, text_tokens)
        else:
            self._prefill_llama(t3_cond, text_tokens)

    # -- prefill ---------------------------------------------------------------------------------
    def _prefill_turbo(self, t3_cond, text_tokens):
        p = self.params
        procs = []
        if p.temperature > 0 and p.temperature != 1.0:
            procs.append(TemperatureLogitsWarper(p.temperature))
        if p.top_k > 0:
            procs.append(TopKLogitsWarper(p.top_k))
        if p.top_p < 1.0:
            procs.append(TopPLogitsWarper(p.top_p))
        if p.repetition_penalty != 1.0:
            procs.append(RepetitionPenaltyLogitsProcessor(p.repetition_penalty))
        self._procs = LogitsProcessorList(procs)
        self._start = self.t3.hp.start_speech_token * torch.ones_like(text_tokens[:, :1])
        embeds, _ = self.t3.prepare_input_embeds(t3_cond=t3_cond, text_tokens=text_tokens,
                                                 speech_tokens=self._start, cfg_weight=0.0)
        self._forward(embeds)

    def _prefill_llama(self, t3_cond, text_tokens):
        p = self.params
        self._cfg = p.cfg_weight > 0
        if self._cfg:
            text_tokens = torch.cat([text_tokens, text_tokens], dim=0)  # row 2: unconditional
        self._min_p = MinPLogitsWarper(min_p=p.min_p)
        self._top_p = TopPLogitsWarper(top_p=p.top_p)
        self._rep = RepetitionPenaltyLogitsProcessor(penalty=float(p.repetition_penalty))
        start = self.t3.hp.start_speech_token
        self._ids = torch.tensor([[start]], dtype=torch.long, device=text_tokens.device)
        embeds, _ = self.t3.prepare_input_embeds(
            t3_cond=t3_cond, text_tokens=text_tokens,
            speech_tokens=start * torch.ones_like(text_tokens[:, :1]), cfg_weight=p.cfg_weight)
        bos = self._speech_embed(self._ids, position=0)
        self._forward(torch.cat([embeds, bos.expand(embeds.size(0), -1, -1)], dim=1))

    # -- decoding --------------------------------------------------------------------------------
    def _speech_embed(self, token: torch.Tensor, position: int) -> torch.Tensor:
        embed = self.t3.speech_emb(token)
        if not self.turbo:
            embed = embed + self.t3.speech_pos_emb.get_fixed_embedding(position)
        return embed

    def _forward(self, embeds: torch.Tensor) -> None:
        out = self.t3.tfmr(inputs_embeds=embeds, past_key_values=self._past, use_cache=True)
        self._past = out.past_key_values
        self._pending = self.t3.speech_head(out.last_hidden_state[:, -1, :]).float()  # (B, V)

    def _sample(self, logits: torch.Tensor) -> torch.Tensor:
        if self.turbo:
            ids = self._start if not self.generated else torch.tensor(
                [self.generated], dtype=torch.long, device=logits.device)
            logits = self._procs(ids, logits)
        else:
            if self._cfg:
                cond, uncond = logits[0:1], logits[1:2]
                logits = cond + self.params.cfg_weight * (cond - uncond)
            logits = self._rep(self._ids, logits)
            if self.params.temperature != 1.0:
                logits = logits / self.params.temperature
            logits = self._top_p(self._ids, self._min_p(self._ids, logits))
        probs = F.softmax(logits, dim=-1)
        return torch.multinomial(probs, num_samples=1, generator=self.generator)  # (1, 1)

    @torch.inference_mode()
    def next_token(self) -> int | None:
        """The next speech token, or None once end-of-speech was sampled or the cap is reached."""
        if self.done:
            return None
        if self._pending is None:
            last = torch.tensor([[self.generated[-1]]], dtype=torch.long, device=self.t3.device)
            embed = self._speech_embed(last, position=len(self.generated))
            if not self.turbo and self._cfg:
                embed = torch.cat([embed, embed])
            self._forward(embed)
        token = self._sample(self._pending)
        self._pending = None
        value = int(token)
        if not self.turbo:
            self._ids = torch.cat([self._ids, token], dim=1)
        if value == self.stop_token:
            self.done = True
            return None
        self.generated.append(value)
        if len(self.generated) >= self.params.max_new_tokens:
            self.done = True
        return value


def with_exaggeration(t3_cond, exaggeration: float):
    """A per-request copy of the voice's T3 conditioning with its own exaggeration (never mutates it)."""
    from chatterbox.models.t3.modules.cond_enc import T3Cond

    emotion = exaggeration * torch.ones(1, 1, 1, device=t3_cond.speaker_emb.device,
                                        dtype=t3_cond.speaker_emb.dtype)
    return T3Cond(speaker_emb=t3_cond.speaker_emb,
                  cond_prompt_speech_tokens=t3_cond.cond_prompt_speech_tokens, emotion_adv=emotion)

