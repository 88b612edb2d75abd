"""How a text piece is cut into streamed chunks, and how much S3Gen re-reads for each: one plan a variant.

Every chunk costs one S3Gen flow pass over a window (the tail of the voice prompt, a little already-spoken
context, the chunk's new tokens), and a pass costs a fixed part plus a part per frame. The two S3Gen
flavours differ by an order of magnitude, so one plan does not fit both. Measured on the development
CPU (2 threads, full-size random weights):

- Turbo's meanflow decoder takes 2 steps: a pass is ~0.13 s plus ~2 ms a frame. Small chunks that
  double (10, 20, 40, ...) cost little, and a 3 s prompt tail (75 tokens) keeps the voice. The first
  pass reads a 1 s tail (25 tokens): it settles only 14 frames, and it is the one every new stream
  waits for, alone or in a batch with the streams that arrived with it (four such passes batched cost
  0.47 s against 1.04 s with the 3 s tail, `bench/flow.py`). On the small random checkpoint its frames
  sit no further from a one-shot decode with the whole prompt than with the 3 s tail (15.9-16.5 dB
  against 12.4-14.4 dB, two token draws; 10 tokens gave 13.4-14.8 dB).
- English and Multilingual take 10 classifier-free-guided steps, each a batch of two: a pass is
  ~0.55 s plus ~16 ms a frame, so a 75-token prompt tail alone costs ~2.4 s, as much as 22 speech
  tokens of T3. Their chunks therefore grow faster after the first (10, 40, 80, ...), the first pass
  reads only 10 prompt tokens (it decides the time to first audio: ~1.2 s for the pass instead of
  ~3.3 s), and passes re-read 10 tokens of context rather than 25. Later passes keep the 75-token
  prompt tail: on the small random English checkpoint the streamed mels sit ~16 dB from a one-shot
  decode with the whole prompt at 75 tokens against ~10 dB at 25, while the first pass's window
  barely moves that number (it settles only 14 frames).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

# A chunk must settle more frames than the vocoder re-reads: 3 look-ahead tokens wait, 2 overlap.
MIN_CHUNK_TOKENS = 6


@dataclass(frozen=True)
class StreamPlan:
    chunk_tokens: tuple[int, ...] = (10, 20, 40, 80, 100)
    """Speech tokens of successive chunks of a request; the last size repeats until it ends. A text
    piece after the first goes on from the size the request has reached (the small first sizes are
    for the time to first audio; later pieces start while earlier audio plays)."""
    prompt_tokens: int | None = 75
    """Voice prompt S3Gen sees while streaming (25 tokens = 1 s; None: all of it, as the library)."""
    first_prompt_tokens: int | None = 75
    """Voice prompt of the request's first chunk, when more tokens follow it (None: all of it)."""
    context_tokens: int | None = 25
    """Already-spoken tokens S3Gen re-reads before a chunk's new ones (None: all of them)."""

    def __post_init__(self):
        if not self.chunk_tokens or min(self.chunk_tokens) < MIN_CHUNK_TOKENS:
            raise ValueError(f"chunk_tokens must all be >= {MIN_CHUNK_TOKENS}")
        for name in ("prompt_tokens", "first_prompt_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 (or None)")
        if self.context_tokens is not None and self.context_tokens < 0:
            raise ValueError("context_tokens must be >= 0 (or None)")

    @property
    def largest_chunk(self) -> int:
        return max(self.chunk_tokens)

    def bounds(self, chunks_before: int = 0) -> Iterator[int]:
        """Token counts at which a piece is decoded: the running sums of `chunk_tokens`, then on, for a
        piece of a request that has made `chunks_before` chunks already (its sizes go on from there)."""
        bound = 0
        for size in self.chunk_tokens[chunks_before:]:
            bound += size
            yield bound
        while True:
            bound += self.chunk_tokens[-1]
            yield bound


# See the module docstring for the 1 s prompt tail of Turbo's first pass.
TURBO_PLAN = StreamPlan(first_prompt_tokens=25)
# See the module docstring for why the 10-step flow of English and Multilingual wants this shape.
CFG_FLOW_PLAN = StreamPlan(chunk_tokens=(10, 40, 80, 160, 200), prompt_tokens=75, first_prompt_tokens=10,
                           context_tokens=10)
