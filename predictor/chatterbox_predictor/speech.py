"""S3Gen, incrementally: speech tokens in, waveform chunks out, joined without clicks.

`SpeechStream` holds one request's decoding state. Each `decode(tokens, final)` runs the flow over a
window (the tail of the voice prompt, a little already-spoken context, and the tokens not settled yet),
keeps the mel frames that are settled (S3Gen's encoder looks three tokens ahead, so the last six frames
wait for more tokens unless this is the final call), and vocodes only the frames not spoken yet.

Why a window: S3Gen's encoder and decoder attend over the whole sequence, so nothing of a previous call
can be reused, and the voice prompt (~400 frames for an 8 s reference) dwarfs a 10-token chunk. A flow
pass costs about 0.13 s plus 2 ms per frame on the development CPU: with the whole prompt and history
every pass costs as much as the library's one-shot decode (1.0-1.2 s for 10 to 50 tokens), with a
3 s prompt tail and 1 s of context a 10-token pass costs ~0.45 s (Turbo; English's 10-step flow costs
several times more, see `stream_plan`). `prompt_tokens=None` and `context_tokens=None` decode with
everything, as the library does. What keeps the joins inaudible:

- fixed noise per request, indexed by a frame's place in the speech (and, for the prompt, counted back
  from its end), so a frame's starting point never changes between decodes or window sizes (the
  library draws fresh noise over the whole sequence on every call);
- the vocoder re-runs the last few frames of the previous chunk as left context, with that chunk's
  excitation source (`cache_source`) so the harmonic phase carries on, and the overlapping samples are
  cross-faded with a raised-cosine window;
- the final call appends three silence tokens, as the library's `generate()` does.

The flow is driven here rather than through `CausalMaskedDiffWithXvec.inference` for two reasons: its
`finalize=False` path fails in chatterbox-tts 0.1.7 (its mask keeps the untrimmed length), and it cannot
take noise for the prompt part.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

SAMPLE_RATE = 24_000
FRAMES_PER_TOKEN = 2  # S3Gen: 25 tokens/s -> 50 mel frames/s
SAMPLES_PER_FRAME = SAMPLE_RATE // 50
LOOKAHEAD_FRAMES = 6  # the encoder's 3-token look-ahead, in frames
OVERLAP_FRAMES = 4  # frames the vocoder re-reads from the previous chunk (80 ms, the cross-fade)
SILENCE_TOKEN = 4299  # chatterbox.models.s3gen.const.S3GEN_SIL
SPEECH_VOCAB = 6561
NOISE_BLOCK = 1024  # noise is drawn in fixed blocks so its values do not depend on the lengths asked for
# HiFT's first call at a new input length costs 0.2-0.4 s more on CPU (oneDNN builds its convolutions
# per shape), so the vocoder only sees a few lengths, each ~1.5x the last (padding costs ~3 ms a frame),
# and the engine runs each once at load.
VOCODER_BUCKETS = (16, 24, 32, 48, 64, 96, 128, 192, 256)


def vocoder_bucket(frames: int) -> int:
    """The vocoder input length `frames` is padded to."""
    for size in VOCODER_BUCKETS:
        if frames <= size:
            return size
    return -(-frames // 128) * 128


class SpeechStream:
    def __init__(self, s3gen, ref_dict: dict, meanflow: bool, seed: int, overlap_frames: int = OVERLAP_FRAMES,
                 n_timesteps: int | None = None, prompt_tokens: int | None = None,
                 context_tokens: int | None = None, first_prompt_tokens: int | None = None):
        """`prompt_tokens`: the voice prompt's tail each pass reads (None: all of it);
        `first_prompt_tokens`: the same for the first pass when it is not the final one (None: as
        `prompt_tokens`); `context_tokens`: spoken tokens re-read before the new ones (None: all)."""
        self.s3gen = s3gen
        self.flow = s3gen.flow
        self.meanflow = meanflow
        self.n_timesteps = n_timesteps or (2 if meanflow else 10)  # the library's defaults
        self.device = s3gen.device
        self.ref = {k: (v.to(self.device) if torch.is_tensor(v) else v) for k, v in ref_dict.items()}
        self.prompt_tokens = prompt_tokens
        self.first_prompt_tokens = prompt_tokens if first_prompt_tokens is None else first_prompt_tokens
        self.context_tokens = context_tokens
        self.overlap = overlap_frames
        self.seed = seed
        self._chunk = 0
        self._speech_noise = _Noise(seed)
        self._prompt_noise = _Noise(seed + 1)  # drawn from the prompt's end backwards
        self.frames_done = 0  # speech mel frames already handed to the vocoder
        self._mel_tail = None
        self._source_tail = torch.zeros(1, 1, 0, device=self.device)
        self._speech_tail = None
        self._started = False
        # Raised-cosine fade for the overlap: fade_in + fade_out == 1 at every sample.
        n = overlap_frames * SAMPLES_PER_FRAME
        ramp = torch.linspace(0, math.pi, n, device=self.device)
        self._fade_in = 0.5 - 0.5 * torch.cos(ramp) if n else None

    # -- flow --------------------------------------------------------------------------------------
    def flow_input(self, tokens: list[int], start: int = 0, prompt_tokens: int | None = None) -> FlowInput:
        """The flow pass for `tokens[start:]`, after the last `prompt_tokens` of the voice prompt (None:
        all of it) and with `tokens[:start]` left out, under this request's noise."""
        ref = self.ref
        speech = torch.tensor([tokens[start:]], dtype=torch.long, device=self.device)
        prompt, prompt_feat = ref["prompt_token"].to(torch.long), ref["prompt_feat"]
        if prompt_tokens is not None and prompt.shape[1] > prompt_tokens:
            prompt = prompt[:, -prompt_tokens:]
            prompt_feat = prompt_feat[:, -FRAMES_PER_TOKEN * prompt_tokens:]
        prompt_frames = prompt_feat.shape[1]
        speech_frames = FRAMES_PER_TOKEN * speech.shape[1]
        noise = torch.cat([self._prompt_noise.take(0, prompt_frames).flip(2),
                           self._speech_noise.take(FRAMES_PER_TOKEN * start, speech_frames)], dim=2)
        return FlowInput(torch.cat([prompt, speech], dim=1), prompt_feat, ref["embedding"],
                         noise.to(self.device), self.meanflow, self.n_timesteps)

    def mels(self, tokens: list[int], start: int = 0, prompt_tokens: int | None = None) -> torch.Tensor:
        """Mel frames (1, 80, 2 * (len(tokens) - start)) of `tokens[start:]` (see `flow_input`)."""
        return flow_mels(self.flow, [self.flow_input(tokens, start, prompt_tokens)])[0]

    # -- vocoder -----------------------------------------------------------------------------------
    @torch.inference_mode()
    def vocode(self, mels: torch.Tensor, final: bool, right: torch.Tensor | None = None) -> torch.Tensor:
        """Waveform for new mel frames; all but the overlap tail unless `final` (1-D float32, CPU).

        `right`: frames after these that are not settled yet; HiFT reads a few frames ahead, so they are
        better right context than padding. Their samples are dropped."""
        feat = mels if self._mel_tail is None else torch.cat([self._mel_tail, mels], dim=2)
        frames = feat.shape[2]
        padded = torch.cat([feat, right], dim=2) if right is not None and right.shape[2] else feat
        padded = F.pad(padded, (0, vocoder_bucket(padded.shape[2]) - padded.shape[2]), mode="replicate")
        # HiFT draws random excitation noise and phases from the global generator: a forked, seeded
        # generator makes a request's audio reproducible without touching anyone else's randomness.
        devices = [self.device] if str(self.device).startswith("cuda") else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed + self._chunk)
            self._chunk += 1
            wav, source = self.s3gen.mel2wav.inference(speech_feat=padded, cache_source=self._source_tail)
        wav = wav[0, : frames * SAMPLES_PER_FRAME]
        source = source[:, :, : frames * SAMPLES_PER_FRAME]
        if self._speech_tail is not None:
            n = self._speech_tail.shape[0]
            wav = wav.clone()
            wav[:n] = wav[:n] * self._fade_in + self._speech_tail * (1 - self._fade_in)
        if not self._started:  # the library silences the first 20 ms and fades in the next 20 ms
            fade = self.s3gen.trim_fade.to(wav.device)
            wav = wav.clone()
            wav[: fade.shape[0]] *= fade[: wav.shape[0]]
            self._started = True
        keep = self.overlap * SAMPLES_PER_FRAME
        if final or keep == 0:
            self._speech_tail = None
            return wav.float().cpu()
        if frames <= self.overlap:  # StreamPlan's chunk sizes never get here
            raise ValueError(f"a chunk of {mels.shape[2]} frames cannot fill a {self.overlap}-frame overlap")
        self._mel_tail = feat[:, :, -self.overlap:]
        self._source_tail = source[:, :, -keep:]
        self._speech_tail = wav[-keep:]
        return wav[:-keep].float().cpu()

    def prepare(self, tokens: list[int], final: bool) -> Decode | None:
        """What decoding the settled frames of `tokens` (every token so far) not returned before takes:
        a flow pass, which may run in one batch with other streams' (`flow_mels`), then `finish`. None:
        no new frame is settled yet."""
        tokens = [t for t in tokens if t < SPEECH_VOCAB]
        if final:
            tokens = tokens + [SILENCE_TOKEN] * 3
        if not tokens:
            return None
        total = FRAMES_PER_TOKEN * len(tokens)
        settled = total if final else max(0, total - LOOKAHEAD_FRAMES)
        if settled <= self.frames_done:
            return None
        start = 0  # first token of the window: some context before the first unsettled frame
        if self.context_tokens is not None:
            start = max(0, self.frames_done // FRAMES_PER_TOKEN - self.context_tokens)
        window = self.first_prompt_tokens if self.frames_done == 0 and not final else self.prompt_tokens
        return Decode(self.flow_input(tokens, start, window), FRAMES_PER_TOKEN * start, settled, final)

    def finish(self, decode: Decode, mels: torch.Tensor) -> torch.Tensor:
        """The audio of a prepared decode, given its flow pass's mels (1-D float32, CPU)."""
        offset = decode.offset
        new = mels[:, :, self.frames_done - offset:decode.settled - offset]
        self.frames_done = decode.settled
        return self.vocode(new, decode.final, right=mels[:, :, decode.settled - offset:])

    def decode(self, tokens: list[int], final: bool) -> torch.Tensor:
        """Audio for the settled frames of `tokens` (every token so far) not returned before."""
        decode = self.prepare(tokens, final)
        if decode is None:
            return torch.zeros(0)
        return self.finish(decode, flow_mels(self.flow, [decode.flow])[0])


@dataclass(frozen=True)
class FlowInput:
    """One flow pass's inputs: tokens (1, n) (the voice prompt's, then speech), the prompt's mel frames
    (1, frames, 80), the speaker embedding, and the starting noise (1, 80, 2n)."""

    tokens: torch.Tensor
    prompt_feat: torch.Tensor
    embedding: torch.Tensor
    noise: torch.Tensor
    meanflow: bool
    n_timesteps: int

    @property
    def shape(self) -> tuple:
        """Passes with the same shape run as one batch."""
        return self.tokens.shape[1], self.prompt_feat.shape[1], self.meanflow, self.n_timesteps


@dataclass(frozen=True)
class Decode:
    """A prepared `SpeechStream` decode: its flow pass, and which of the pass's frames become audio."""

    flow: FlowInput
    offset: int
    """Speech frames left out before the pass's first one (its window starts there)."""
    settled: int
    final: bool


@torch.inference_mode()
def flow_mels(flow, inputs: list[FlowInput]) -> list[torch.Tensor]:
    """The speech mel frames (1, 80, frames) of each pass, run as one batch (all of the same `shape`)."""
    first = inputs[0]
    if any(i.shape != first.shape for i in inputs):
        raise ValueError("only flow passes of one shape run as a batch")
    device = first.tokens.device
    batch = len(inputs)
    all_tokens = torch.cat([i.tokens for i in inputs])
    lengths = torch.full((batch,), all_tokens.shape[1], device=device)
    h, _ = flow.encoder(flow.input_embedding(all_tokens), lengths)
    mu = flow.encoder_proj(h).transpose(1, 2).contiguous()  # (batch, 80, frames)
    total, prompt_frames = mu.shape[2], first.prompt_feat.shape[1]
    embeddings = torch.cat([torch.atleast_2d(i.embedding) for i in inputs])
    spks = flow.spk_embed_affine_layer(F.normalize(embeddings, dim=1))
    cond = torch.zeros(batch, 80, total, device=device, dtype=mu.dtype)
    cond[:, :, :prompt_frames] = torch.cat([i.prompt_feat for i in inputs]).transpose(1, 2)
    mask = torch.ones(batch, 1, total, device=device, dtype=mu.dtype)
    z = torch.cat([i.noise for i in inputs]).to(dtype=mu.dtype)
    t_span = torch.linspace(0, 1, first.n_timesteps + 1, device=device, dtype=mu.dtype)
    decoder = flow.decoder
    if first.meanflow:  # Turbo's distilled decoder: plain Euler steps with (t, r) pairs
        for t, r in zip(t_span[:-1], t_span[1:], strict=True):
            t, r = t.expand(batch), r.expand(batch)
            z = z + (r - t)[:, None, None] * decoder.estimator(z, mask=mask, mu=mu, t=t, spks=spks, cond=cond,
                                                                r=r)
        feat = z
    else:
        if decoder.t_scheduler == "cosine":
            t_span = 1 - torch.cos(t_span * 0.5 * math.pi)
        feat = decoder.solve_euler(z, t_span=t_span, mu=mu, mask=mask, spks=spks, cond=cond)
    return [feat[i:i + 1, :, prompt_frames:].float() for i in range(batch)]


@torch.inference_mode()
def warm_vocoder(s3gen, max_frames: int) -> None:
    """Run HiFT once at every bucketed length up to `max_frames`, so no stream pays the first-call cost."""
    largest = vocoder_bucket(max_frames)
    mel = torch.full((1, 80, largest), -5.0, device=s3gen.device)  # about a quiet frame's log-mel
    beyond = range(VOCODER_BUCKETS[-1] + 128, largest + 1, 128)
    for frames in [*(size for size in VOCODER_BUCKETS if size <= largest), *beyond]:
        s3gen.mel2wav.inference(speech_feat=mel[:, :, :frames],
                                cache_source=torch.zeros(1, 1, 0, device=s3gen.device))


class _Noise:
    """One request's flow noise, (1, 80, frames), drawn lazily in fixed blocks from its own generator so
    that the values at a frame never depend on which lengths were asked for before."""

    def __init__(self, seed: int):
        self._generator = torch.Generator(device="cpu").manual_seed(seed)
        self._noise = torch.zeros(1, 80, 0)

    def take(self, first: int, frames: int) -> torch.Tensor:
        while self._noise.shape[2] < first + frames:
            block = torch.randn(1, 80, NOISE_BLOCK, generator=self._generator)
            self._noise = torch.cat([self._noise, block], dim=2)
        return self._noise[:, :, first:first + frames]
