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
- Multilingual only: between guidance and the repetition penalty, the library's alignment control edits
  the logits (`alignment.AlignmentGuard`); only that variant pays for the attention rows it watches.

The KV cache grows in place (`GrowingCache`): transformers' `DynamicCache` concatenates every layer's
keys and values into new tensors at every step, which on the development CPU took 44 of Turbo's
73 ms per token (fresh multi-megabyte buffers, page faults and copies), more than the matmuls.

The voice's conditioning (speaker embedding, its prompt's speech tokens, the emotion value) comes first
in T3's causal sequence, so its keys and values do not depend on the text: `ConditioningPrefix` computes
them once per voice and every request starts from them, which turns a ~0.7 s prefill of ~200 positions
(full-size Turbo on the development CPU) into one over the text alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer
from transformers.generation.logits_process import (
    LogitsProcessorList,
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from .alignment import AlignmentGuard, AttentionProbe
from .sampling import SamplingParams
from .variants import Variant

log = logging.getLogger(__name__)


class _GrowingLayer(DynamicLayer):
    """A `DynamicLayer` whose keys and values live in a buffer with spare room: a step writes its new
    positions in place, and the buffer doubles when full (amortised O(1) copies instead of O(length))."""

    def __init__(self, reserve: int):
        super().__init__()
        self._reserve = reserve
        self._length = 0
        self._k = self._v = None

    def update(self, key_states, value_states, cache_kwargs=None):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self._length + key_states.shape[-2]
        if self._k is None or end > self._k.shape[-2]:
            size = max(end + self._reserve, 2 * (0 if self._k is None else self._k.shape[-2]))
            k = key_states.new_empty(*key_states.shape[:-2], size, key_states.shape[-1])
            v = value_states.new_empty(*value_states.shape[:-2], size, value_states.shape[-1])
            if self._length:
                k[..., :self._length, :] = self._k[..., :self._length, :]
                v[..., :self._length, :] = self._v[..., :self._length, :]
            self._k, self._v = k, v
        self._k[..., self._length:end, :] = key_states
        self._v[..., self._length:end, :] = value_states
        self._length = end
        self.keys, self.values = self._k[..., :end, :], self._v[..., :end, :]
        return self.keys, self.values


class GrowingCache(DynamicCache):
    """A `DynamicCache` made of `_GrowingLayer`s, optionally starting from a conditioning prefix."""

    def __init__(self, num_layers: int, reserve: int, prefix: ConditioningPrefix | None = None,
                 batch: int = 1):
        Cache.__init__(self, layers=[_GrowingLayer(reserve) for _ in range(num_layers)])
        if prefix is not None:
            for layer, (k, v) in zip(self.layers, prefix.layers, strict=True):
                layer.update(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1))


@dataclass(frozen=True)
class ConditioningPrefix:
    """T3's keys and values over one voice's conditioning, shared read-only by the requests using it
    (a `GrowingCache` copies them into its own buffer, so they are never written)."""

    length: int
    layers: tuple[tuple[torch.Tensor, torch.Tensor], ...]

    @classmethod
    @torch.inference_mode()
    def compute(cls, t3, t3_cond) -> ConditioningPrefix:
        cond_emb = t3.prepare_conditioning(t3_cond)  # (1, length, dim)
        out = t3.tfmr(inputs_embeds=cond_emb, use_cache=True)
        layers = tuple((layer.keys, layer.values) for layer in out.past_key_values.layers)
        return cls(cond_emb.shape[1], layers)


class T3Stream:
    """One request's T3 decoding: `next_token()` until it returns None (end of speech or the cap)."""

    @torch.inference_mode()
    def __init__(self, t3, variant: Variant, t3_cond, text_tokens: torch.Tensor, params: SamplingParams,
                 generator: torch.Generator, prefix: ConditioningPrefix | None = None):
        self.t3 = t3
        self.turbo = not variant.guided
        self.params = params
        self.generator = generator
        self.stop_token = t3.hp.stop_speech_token
        self.generated: list[int] = []
        self.done = False
        self._pending = None  # the next logits, computed lazily
        self._past = None
        self._prefix = prefix
        self._probe = self.alignment = None  # the alignment control: multilingual only
        self._alignment_control = variant.alignment_control
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
        self._forward(self._after_prefix(embeds))

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
        embeds, len_cond = self.t3.prepare_input_embeds(
            t3_cond=t3_cond, text_tokens=text_tokens,
            speech_tokens=start * torch.ones_like(text_tokens[:, :1]), cfg_weight=p.cfg_weight)
        if self._alignment_control:
            self._watch_alignment(len_cond, text_tokens.size(-1))
        bos = self._speech_embed(self._ids, position=0)
        self._forward(self._after_prefix(torch.cat([embeds, bos.expand(embeds.size(0), -1, -1)], dim=1)))

    def _watch_alignment(self, len_cond: int, text_length: int) -> None:
        if not AttentionProbe.fits(self.t3.tfmr):  # only random shallow checkpoints lack those layers
            log.warning("the backbone has %d layers, too few for the alignment heads: sampling without "
                        "the multilingual alignment control", len(self.t3.tfmr.layers))
            return
        self._probe = AttentionProbe(self.t3.tfmr)
        # The text follows the conditioning (`prepare_input_embeds`' order), prefix cached or not.
        self.alignment = AlignmentGuard((len_cond, len_cond + text_length), self.stop_token)

    def _after_prefix(self, embeds: torch.Tensor) -> torch.Tensor:
        """Sets up the KV cache; returns the part of the prefill input the conditioning prefix does not
        already cover."""
        # Room for the prefill and the first 256 tokens (10 s of speech) before the first doubling.
        reserve = embeds.shape[1] + min(self.params.max_new_tokens, 256) + 2
        self._past = GrowingCache(self.t3.tfmr.config.num_hidden_layers, reserve, self._prefix,
                                  batch=embeds.size(0))
        return embeds if self._prefix is None else embeds[:, self._prefix.length:]

    # -- decoding --------------------------------------------------------------------------------
    def _speech_embed(self, token: torch.Tensor, position: int) -> torch.Tensor:
        embed = self.t3.speech_emb(token)
        if not self.turbo:
            embed = embed + self.t3.speech_pos_emb.get_fixed_embedding(position)
        return embed

    def _forward(self, embeds: torch.Tensor) -> None:
        if self._probe is None:
            out = self.t3.tfmr(inputs_embeds=embeds, past_key_values=self._past, use_cache=True)
        else:
            self._query_start = self._past.get_seq_length()  # absolute position of embeds[:, 0]
            with self._probe:
                out = self.t3.tfmr(inputs_embeds=embeds, past_key_values=self._past, use_cache=True)
            self._attention = self._probe.weights()
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
            if self.alignment is not None:
                last = self.generated[-1] if self.generated else self.t3.hp.start_speech_token
                logits = self.alignment.edit(self._attention, self._query_start, logits, last)
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

