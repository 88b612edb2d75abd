"""Multilingual T3's alignment guard: watches where speech attends in the text and edits the logits.

The library's multilingual `T3.inference` (chatterbox-tts 0.1.7) steers its sampling by a few attention
heads whose weights, from each speech position onto the text positions, follow the text being spoken.
From them it estimates how far speech has got in the text, then per step:

- while that estimate is short of the last three text tokens (and the text has more than five), end of
  speech is made impossible, so speech cannot stop half way;
- once the text is done, too long a stay on its last tokens (a hallucinated tail), attention going back
  to earlier text (a repetition), or the same speech token twice in a row forces end of speech.

`AlignmentGuard` is that per-request state machine, written for our loop; `AttentionProbe` gets it the
watched heads' weights. The library switches the whole backbone to eager attention to get them (SDPA
returns none); the probe instead recomputes the few watched rows from each watched layer's input and
its KV cache, so every layer keeps SDPA and a step pays for one head's scores per watched head.

Two places differ on purpose: the library also computes a "false start" flag and a duration that never
reach the logits (left out), and it crashes on texts of five tokens or fewer once speech reaches their
end (`max` over zero columns); here such a text has no earlier text to repeat, so no repetition is seen.
"""

from __future__ import annotations

import logging
import threading

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

# (layer, head) pairs of the multilingual T3 whose attention follows the text (the library's choice for
# its 30-layer Llama backbone; averaged in this order, as the library does).
ALIGNMENT_HEADS = ((12, 15), (13, 11), (9, 2))

# Logit used to forbid or force a token: the library's ±2**15, finite in every dtype of 16 bits or more.
HUGE = float(2**15)
# The text counts as spoken once the position estimate reaches its last 3 tokens: the end-of-text token
# gets little attention and the one before it is often punctuation.
END_MARGIN = 3
# Texts of at most this many tokens never have end of speech suppressed (too short to align reliably).
SHORT_TEXT = 5
# A position estimate that moves by -4 or less, or by +7 or more, in one step is ignored as a jump.
BACK_LIMIT, FORWARD_LIMIT = -4, 7
# Attention summed over the frames after completion: 5 frames' worth (200 ms at 25 tokens a second) on
# the last tokens is a hallucinated tail; as much on earlier text (leaving out the last 5) is a repetition.
TAIL_LIMIT = 5.0
REPEAT_LIMIT = 5.0
REPEAT_SKIP = 5


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class AttentionProbe:
    """Records, per forward pass, one batch row's attention weights of each watched head.

    `select` names the row (a slot of the batch's forward, the conditional one of a guided pair), how
    many of the forward's positions are its real input and how long its sequence is with them (in a
    batch the forward pads shorter inputs and the cache holds longer sequences). Use as a context
    manager around the backbone call: it hooks the watched layers' attention modules while inside.
    `weights()` then gives the heads' mean, (new positions, the row's positions), in the model's dtype
    like the library's eager weights.
    """

    def __init__(self, tfmr, heads=ALIGNMENT_HEADS):
        self.tfmr = tfmr
        self.heads = tuple(heads)
        self._found: dict[tuple[int, int], torch.Tensor] = {}
        self._handles = []
        self._thread: int | None = None
        self._slot = self._new = self._total = 0

    def select(self, slot: int, new: int, total: int) -> None:
        self._slot, self._new, self._total = slot, new, total

    @staticmethod
    def fits(tfmr, heads=ALIGNMENT_HEADS) -> bool:
        """Whether the backbone has every watched layer (random shallow test checkpoints may not)."""
        return max(layer for layer, _ in heads) < len(tfmr.layers)

    def __enter__(self) -> AttentionProbe:
        # The hooks sit on modules that other threads may run meanwhile (the server's cloner tunes
        # voices on the same T3): only this thread's forward passes are recorded.
        self._thread = threading.get_ident()
        self._found.clear()
        for layer in sorted({layer for layer, _ in self.heads}):
            attn = self.tfmr.layers[layer].self_attn
            self._handles.append(attn.register_forward_hook(self._record, with_kwargs=True))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _record(self, module, args, kwargs, output) -> None:
        if threading.get_ident() != self._thread:
            return
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        cos, sin = kwargs["position_embeddings"]
        keys = kwargs["past_key_values"].layers[module.layer_idx].keys  # already holds this step's keys
        new, total, row = self._new, self._total, slice(self._slot, self._slot + 1)
        hidden, cos, sin = hidden[row, :new], cos[row, :new], sin[row, :new]
        keys, dim = keys[self._slot:self._slot + 1, :, :total], module.head_dim
        queries = None
        for layer, head in self.heads:
            if layer != module.layer_idx:
                continue
            if queries is None:  # through the layer itself: its weight may be packed (packed_linear)
                queries = module.q_proj(hidden)[0]  # (new, heads * dim)
            query = queries[:, head * dim:(head + 1) * dim]  # (new, dim)
            query = query * cos[0] + rotate_half(query) * sin[0]
            key = keys[0, head // module.num_key_value_groups]  # (total, dim)
            scores = (query @ key.T) * module.scaling
            if new > 1:  # causal mask: position p sees keys 0..p; the new positions end the sequence
                seen = torch.arange(total, device=scores.device)[None] <= \
                    torch.arange(total - new, total, device=scores.device)[:, None]
                scores = scores.masked_fill(~seen, float("-inf"))
            self._found[layer, head] = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)

    def weights(self) -> torch.Tensor:
        return torch.stack([self._found[h] for h in self.heads]).mean(dim=0)


class AlignmentGuard:
    """One request's alignment state; `edit(logits, last_token)` once per sampled token, in order.

    `text_slice` is (first, end) of the text tokens in T3's sequence, counted the library's way: from 0
    at the first conditioning position, whatever part of it came from a cached prefix.
    """

    def __init__(self, text_slice: tuple[int, int], stop_token: int):
        self.first, self.end = text_slice
        self.length = self.end - self.first
        self.stop_token = stop_token
        self.frame = 0  # speech frames seen (the first step brings two: start of speech and its repeat)
        self.position = 0  # estimated text position, only moved by plausible steps
        self.complete = False
        self.forced = False  # whether end of speech was forced (for logs and tests)
        # Sums over the frames after the one that completed the text (the library's A[completed_at:]).
        self._tail = torch.zeros(min(END_MARGIN, self.length))
        self._repeat = 0.0
        self._recent: list[int] = []  # the last two tokens fed to the model, start of speech included
        self._fed = 0

    def edit(self, attention: torch.Tensor, query_start: int, logits: torch.Tensor,
             last_token: int) -> torch.Tensor:
        """Logits after the guard's edits. `attention` holds the probe's weights of the forward pass
        whose new positions began at `query_start` (absolute); `last_token` is the token fed last."""
        rows = attention[max(self.end - query_start, 0):, self.first:self.end].float().cpu()
        rows[:, self.frame + 1:] = 0  # speech cannot have passed text it has had no time to speak
        if self.complete:
            self._tail += rows[:, -END_MARGIN:].sum(dim=0)
            if self.length > REPEAT_SKIP:
                self._repeat += float(rows[:, :-REPEAT_SKIP].max(dim=1).values.sum())
        estimate = int(rows[-1].argmax())
        if BACK_LIMIT < estimate - self.position < FORWARD_LIMIT:
            self.position = estimate
        self.complete = self.complete or self.position >= self.length - END_MARGIN

        self._fed += 1
        self._recent = (self._recent + [last_token])[-2:]
        stutter = self._fed >= 3 and self._recent[0] == self._recent[1]
        long_tail = self.complete and float(self._tail.max()) >= TAIL_LIMIT
        repeating = self.complete and self._repeat > REPEAT_LIMIT

        if estimate < self.length - END_MARGIN and self.length > SHORT_TEXT:
            logits[..., self.stop_token] = -HUGE
        if long_tail or repeating or stutter:
            log.debug("forcing end of speech at frame %d: tail=%s repetition=%s stutter=%s",
                      self.frame, long_tail, repeating, stutter)
            self.forced = True
            logits = torch.full_like(logits, -HUGE)
            logits[..., self.stop_token] = HUGE
        self.frame += 1
        return logits
