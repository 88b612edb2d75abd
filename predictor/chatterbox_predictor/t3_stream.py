"""T3 speech-token decoding for a batch of streams, one token per stream a step, with the library's sampling.

A `T3Row` holds what one text piece's decoding needs (its sampler, random generator, tokens so far and
the input it feeds next); a `T3Batch` advances all its rows with one transformer forward a step, each row
at its own position over its own part of a shared KV cache (`SlotCache`). Rows join (their prefill runs
in the same forward as the others' decoding) and leave between steps. `T3Stream` is a batch of one, for
callers that decode a single piece.

Compared with the library's loops the forward asks the transformer for nothing it does not use: no
attention maps (which force eager attention instead of SDPA) and no hidden states of every layer, and the
speech head runs on each row's last position only. The sampling is the library's, step for step, per row:

- Turbo (GPT-2): temperature, top-k, top-p, then repetition penalty (transformers' processors, in the
  order `inference_turbo` applies them); the first token is sampled after the prefill.
- English / Multilingual (Llama): classifier-free guidance `cond + w * (cond - uncond)` over two cache
  rows (the second with its text embeddings zeroed), repetition penalty, temperature, min-p, top-p; the
  start-of-speech embedding follows the conditioning exactly as `T3.inference` feeds it.
- Multilingual only: between guidance and the repetition penalty, the library's alignment control edits
  the logits (`alignment.AlignmentGuard`); only that variant pays for the attention rows it watches.

The KV cache is written in place: transformers' `DynamicCache` concatenates every layer's keys and values
into new tensors at every step, which on the development CPU took 44 of Turbo's 73 ms per token (fresh
multi-megabyte buffers, page faults and copies), more than the matmuls. `SlotCache` keeps one buffer per
layer with room to spare, a slot (a batch row of the transformer) per stream row, and grows by doubling.

The voice's conditioning (speaker embedding, its prompt's speech tokens, the emotion value) comes first
in T3's causal sequence, so its keys and values do not depend on the text: `ConditioningPrefix` computes
them once per voice and every row starts from a copy of them, which turns a ~0.7 s prefill of ~200
positions (full-size Turbo on the development CPU) into one over the text alone.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers.cache_utils import Cache, DynamicLayer
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

# Positions a slot gets beyond what it needs when its buffer grows: the first 256 tokens (10 s of speech)
# of a typical piece fit before the first doubling.
RESERVE = 256


class _SlotLayer(DynamicLayer):
    """One layer's keys and values for every slot: a (slots, heads, positions, head_dim) buffer. A step
    writes each slot's new positions where that slot's sequence ends (`SlotCache.plan`) and hands the
    attention the first `kv_length` positions of the active slots; what a slot has not written is masked."""

    def __init__(self, cache: SlotCache):
        super().__init__()
        self._cache = cache
        self._k = self._v = None

    def reserve(self, slots: int, length: int, like: torch.Tensor) -> None:
        """Room for `slots` slots of `length` positions, shaped and typed like `like` (B, heads, _, dim)."""
        if self._k is not None and slots <= self._k.shape[0] and length <= self._k.shape[2]:
            return
        old = self._k
        have_slots, have_len = (0, 0) if old is None else (old.shape[0], old.shape[2])
        # Doubling: streams that arrive one by one reallocate (and copy every slot's cache) a few times,
        # not once each; at most twice the slots the batch size needs are ever held.
        new_slots = have_slots if slots <= have_slots else max(slots, 2 * have_slots)
        new_len = have_len if length <= have_len else max(length + RESERVE, 2 * have_len)
        shape = (new_slots, like.shape[1], new_len, like.shape[3])
        k, v = like.new_zeros(shape), like.new_zeros(shape)
        if old is not None:
            k[:have_slots, :, :have_len] = old
            v[:have_slots, :, :have_len] = self._v
        self._k, self._v = k, v
        self.is_initialized = True
        self.dtype, self.device = like.dtype, like.device

    def write(self, slot: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Keys and values (n, heads, length, dim) into slots slot..slot+n from position 0."""
        n, length = keys.shape[0], keys.shape[2]
        self.reserve(slot + n, length, keys)
        self._k[slot:slot + n, :, :length] = keys
        self._v[slot:slot + n, :, :length] = values

    def move(self, src: int, dst: int, n: int, length: int) -> None:
        self._k[dst:dst + n, :, :length] = self._k[src:src + n, :, :length].clone()
        self._v[dst:dst + n, :, :length] = self._v[src:src + n, :, :length].clone()

    def update(self, key_states, value_states, cache_kwargs=None):
        plan = self._cache
        slots = slice(plan.first, plan.first + key_states.shape[0])
        self.reserve(slots.stop, plan.kv_length, key_states)
        # Advanced indices (n, 1) and (n, Q) around a slice: the indexed view is (n, Q, heads, dim).
        self._k[plan.slot_index, :, plan.positions] = key_states.transpose(1, 2)
        self._v[plan.slot_index, :, plan.positions] = value_states.transpose(1, 2)
        self.keys = self._k[slots, :, :plan.kv_length]
        self.values = self._v[slots, :, :plan.kv_length]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self._cache.kv_length


class SlotCache(Cache):
    """The KV cache of a `T3Batch`: per layer, a `_SlotLayer`; per step, where each slot writes."""

    def __init__(self, num_layers: int):
        self.kv_length = self.first = 0
        self.slot_index = self.positions = None
        Cache.__init__(self, layers=[_SlotLayer(self) for _ in range(num_layers)])

    def plan(self, first: int, lengths: torch.Tensor, new: int) -> torch.Tensor:
        """Sets up a forward over slots first..first+n that brings `new` positions to each slot, whose
        sequences are `lengths` (n,) long (shorter inputs are padded; the padding is written past the
        slot's end, never attended to, and overwritten by the next step). Returns the (n, new) position
        ids."""
        self.positions = lengths[:, None] + torch.arange(new, device=lengths.device)[None]
        self.first = first
        self.slot_index = first + torch.arange(len(lengths), device=lengths.device)[:, None]
        self.kv_length = int(lengths.max()) + new
        return self.positions

    def write_prefix(self, slot: int, n: int, prefix: ConditioningPrefix) -> None:
        for layer, (k, v) in zip(self.layers, prefix.layers, strict=True):
            layer.write(slot, k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1))

    def move(self, src: int, dst: int, n: int, length: int) -> None:
        for layer in self.layers:
            layer.move(src, dst, n, length)


@dataclass(frozen=True)
class ConditioningPrefix:
    """T3's keys and values over one voice's conditioning, shared read-only by the rows using it (each
    row copies them into its own slots, so they are never written)."""

    length: int
    layers: tuple[tuple[torch.Tensor, torch.Tensor], ...]

    @classmethod
    @torch.inference_mode()
    def compute(cls, t3, t3_cond) -> ConditioningPrefix:
        cond_emb = t3.prepare_conditioning(t3_cond)  # (1, length, dim)
        out = t3.tfmr(inputs_embeds=cond_emb, use_cache=True)
        layers = tuple((layer.keys, layer.values) for layer in out.past_key_values.layers)
        return cls(cond_emb.shape[1], layers)


class T3Row:
    """One text piece's decoding inside a `T3Batch`: what it feeds the transformer next (`feed`) and how
    it samples a token from the logits it gets back (`take`). `done` once end of speech was sampled or
    the cap is reached."""

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
        self.prefix = prefix
        self.slots = 1  # cache rows: two with classifier-free guidance
        self.slot = None  # the first one, while in a batch
        self.length = 0  # positions of the row's sequence in the cache
        self.probe = self.alignment = None  # the alignment control: multilingual only
        self._alignment_control = variant.alignment_control
        self._attention = self._query_start = None
        if self.turbo:
            self._input = self._prefill_turbo(t3_cond, text_tokens)
        else:
            self._input = self._prefill_llama(t3_cond, text_tokens)
        if prefix is not None:
            self._input = self._input[:, prefix.length:]

    # -- prefill ---------------------------------------------------------------------------------
    def _prefill_turbo(self, t3_cond, text_tokens) -> torch.Tensor:
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
        return embeds

    def _prefill_llama(self, t3_cond, text_tokens) -> torch.Tensor:
        p = self.params
        self._cfg = p.cfg_weight > 0
        if self._cfg:
            text_tokens = torch.cat([text_tokens, text_tokens], dim=0)  # row 2: unconditional
            self.slots = 2
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
        return torch.cat([embeds, bos.expand(embeds.size(0), -1, -1)], dim=1)

    def _watch_alignment(self, len_cond: int, text_length: int) -> None:
        if not AttentionProbe.fits(self.t3.tfmr):  # only random shallow checkpoints lack those layers
            log.warning("the backbone has %d layers, too few for the alignment heads: sampling without "
                        "the multilingual alignment control", len(self.t3.tfmr.layers))
            return
        self.probe = AttentionProbe(self.t3.tfmr)
        # The text follows the conditioning (`prepare_input_embeds`' order), prefix cached or not.
        self.alignment = AlignmentGuard((len_cond, len_cond + text_length), self.stop_token)

    # -- decoding --------------------------------------------------------------------------------
    def _speech_embed(self, token: torch.Tensor, position: int) -> torch.Tensor:
        embed = self.t3.speech_emb(token)
        if not self.turbo:
            embed = embed + self.t3.speech_pos_emb.get_fixed_embedding(position)
        return embed

    def feed(self) -> torch.Tensor:
        """This step's input embeddings, (slots, new positions, dim): the prefill (after the cached
        prefix) at first, then the last token's embedding."""
        if self._input is None:
            last = torch.tensor([[self.generated[-1]]], dtype=torch.long, device=self.t3.device)
            embed = self._speech_embed(last, position=len(self.generated))
            self._input = embed.expand(self.slots, -1, -1)
        return self._input

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

    def take(self, logits: torch.Tensor) -> int | None:
        """Samples the next token from this row's logits (slots, vocabulary); None at end of speech."""
        self._input = None
        token = self._sample(logits)
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


class T3Batch:
    """Rows decoded together: `step()` runs one transformer forward for all of them (prefill for the rows
    that joined, decoding for the others, each at its own position) and samples one token per row.

    Slots stay packed (the rows' slots are 0..n-1 in order), so that the forward reads the cache's first
    slots with no gather: a leaving row's successors move down by its slot count (one copy of their keys
    and values, once). The cache is freed when the last row leaves.

    Joining rows' conditioning prefixes are written at the next step, all at once: each growth of the
    cache allocates and zeroes every slot's buffers (~125 MB a slot for full-size Turbo) and copies the
    old ones, and four requests that arrived together took 15, 68, 88 and 108 ms to join one by one on
    the development CPU, before their first step.
    """

    def __init__(self, t3):
        self.t3 = t3
        self.rows: list[T3Row] = []
        self.cache: SlotCache | None = None
        self._dtype = next(t3.parameters()).dtype
        self._joining: list[T3Row] = []

    @property
    def slots(self) -> int:
        return sum(row.slots for row in self.rows)

    def add(self, row: T3Row) -> None:
        if self.cache is None:
            self.cache = SlotCache(self.t3.tfmr.config.num_hidden_layers)
        row.slot, row.length = self.slots, 0
        if row.prefix is not None:
            self._joining.append(row)
            row.length = row.prefix.length
        self.rows.append(row)

    def _write_prefixes(self) -> None:
        """The joining rows' prefixes into their slots, after one growth of the cache for all of them."""
        joining, self._joining = self._joining, []
        if not joining:
            return
        length = max(row.prefix.length for row in joining)
        for i, layer in enumerate(self.cache.layers):
            layer.reserve(self.slots, length, joining[0].prefix.layers[i][0])
        for row in joining:
            self.cache.write_prefix(row.slot, row.slots, row.prefix)

    @torch.inference_mode()  # the cache's buffers are inference tensors (the forward may grow them)
    def remove(self, row: T3Row) -> None:
        if row not in self.rows:  # already gone (a failure while it left)
            return
        at = self.rows.index(row)
        del self.rows[at]
        if row in self._joining:
            self._joining.remove(row)
        for later in self.rows[at:]:
            if later not in self._joining and later.length:  # a row not stepped yet has nothing to move
                self.cache.move(later.slot, later.slot - row.slots, later.slots, later.length)
            later.slot -= row.slots
        row.slot = None
        if not self.rows:
            self.cache = None

    @torch.inference_mode()
    def step(self) -> dict[T3Row, int | None]:
        """One token per row (None: that row's end of speech).

        The rows whose inputs are longer than one position (prefills) share the forward with the others
        unless padding would more than double the positions computed; then they get a forward of their
        own in the same step (on the CPU every padded position costs a real one: a 40-token prefill padded
        across four decoding rows is 160 positions). Rows join at the end, so the prefilling rows are the
        last ones and each group is a run of neighbouring slots."""
        self._write_prefixes()
        inputs = {row: row.feed() for row in self.rows}
        width = max(x.shape[1] for x in inputs.values())
        useful = sum(x.shape[0] * x.shape[1] for x in inputs.values())
        groups = [self.rows]
        split = next((i for i, row in enumerate(self.rows) if inputs[row].shape[1] > 1), 0)
        if split and self.slots * width > 2 * useful and \
                all(inputs[row].shape[1] > 1 for row in self.rows[split:]):
            groups = [self.rows[:split], self.rows[split:]]
        tokens = {}
        for group in groups:
            logits = self._forward(group, inputs)
            for row in group:
                start = row.slot - group[0].slot
                tokens[row] = row.take(logits[start:start + row.slots])
        return tokens

    def _forward(self, group: list[T3Row], inputs: dict[T3Row, torch.Tensor]) -> torch.Tensor:
        """Logits (the group's slots, vocabulary) after one forward of `group`, a run of neighbouring
        rows; shorter inputs are padded to the longest."""
        device = self.t3.device
        first = group[0].slot
        n = sum(row.slots for row in group)
        width = max(inputs[row].shape[1] for row in group)
        dim = inputs[group[0]].shape[-1]
        embeds = torch.zeros(n, width, dim, dtype=self._dtype, device=device)
        lengths = torch.zeros(n, dtype=torch.long)
        used = torch.zeros(n, dtype=torch.long)  # positions of real input per slot
        for row in group:
            span = slice(row.slot - first, row.slot - first + row.slots)
            x = inputs[row]
            embeds[span, :x.shape[1]] = x.to(self._dtype)
            lengths[span], used[span] = row.length, x.shape[1]
        lengths, used = lengths.to(device), used.to(device)
        positions = self.cache.plan(first, lengths, width)
        # Slot s's query at position p sees its own keys 0..p; padding and other slots' keys are hidden.
        keys = torch.arange(self.cache.kv_length, device=device)
        visible = keys[None, None, :] <= positions[:, :, None]  # (n, width, kv_length)
        mask = torch.zeros(visible.shape, dtype=self._dtype, device=device)
        mask.masked_fill_(~visible, torch.finfo(self._dtype).min)
        probed = [row for row in group if row.probe is not None]
        with contextlib.ExitStack() as stack:
            for row in probed:
                new = inputs[row].shape[1]
                row.probe.select(row.slot - first, new, row.length + new)
                stack.enter_context(row.probe)
            out = self.t3.tfmr(inputs_embeds=embeds, attention_mask=mask[:, None], position_ids=positions,
                               past_key_values=self.cache, use_cache=True,
                               cache_position=torch.arange(width, device=device))
        for row in probed:
            row._attention, row._query_start = row.probe.weights(), row.length
        for row in group:
            row.length += inputs[row].shape[1]
        last = out.last_hidden_state[torch.arange(n, device=device), used - 1]  # (n, dim)
        return self.t3.speech_head(last).float()


class T3Stream:
    """One text piece decoded alone (a batch of one): `next_token()` until it returns None (end of speech
    or the cap)."""

    def __init__(self, t3, variant: Variant, t3_cond, text_tokens: torch.Tensor, params: SamplingParams,
                 generator: torch.Generator, prefix: ConditioningPrefix | None = None):
        self.row = T3Row(t3, variant, t3_cond, text_tokens, params, generator, prefix)
        self._batch = T3Batch(t3)
        self._batch.add(self.row)

    @property
    def done(self) -> bool:
        return self.row.done

    @property
    def alignment(self) -> AlignmentGuard | None:
        return self.row.alignment

    def next_token(self) -> int | None:
        if self.row.done:
            return None
        return self._batch.step()[self.row]


def with_exaggeration(t3_cond, exaggeration: float):
    """A per-request copy of the voice's T3 conditioning with its own exaggeration (never mutates it)."""
    from chatterbox.models.t3.modules.cond_enc import T3Cond

    emotion = exaggeration * torch.ones(1, 1, 1, device=t3_cond.speaker_emb.device,
                                        dtype=t3_cond.speaker_emb.dtype)
    return T3Cond(speaker_emb=t3_cond.speaker_emb,
                  cond_prompt_speech_tokens=t3_cond.cond_prompt_speech_tokens, emotion_adv=emotion)
