"""Segments to a voice: the `Conditionals` a Chatterbox variant reads, as the bytes of a `.pth`.

- Speaker embedding (T3's speaker conditioning): the voice encoder's embedding of every accepted
  segment, averaged and L2-normalised (`VoiceEncoder.utt_to_spk_embed`, the encoder's own rule for many
  utterances of one speaker), so more audio gives a steadier voice.
- T3's prompt speech tokens and S3Gen's reference (mel features, tokens, x-vector): from the best
  segments, most typical of the speaker first (highest similarity to that embedding), joined with a short
  pause until they fill what the variant reads (Turbo's prompt 15 s, the others' 6 s; S3Gen's 10 s).
- Exaggeration: the `emotion_adv` value (a request may override it).

The file is what the library's `Conditionals.save` writes, with every tensor on the CPU, so a voice made
on a GPU loads on a CPU and the other way round.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from .segments import S3_SR, S3GEN_SR, Segment

JOIN_SILENCE_S = 0.25  # the pause between two segments joined into one reference
# S3Gen's reference: 2 mel frames per speech token, one token per 40 ms (960 samples at 24 kHz). A clip
# that is not a whole number of tokens long gives one mel frame too many, which S3Gen's embed_ref only
# warns about and the voice format refuses; so the reference is cut to whole tokens.
TOKEN_SAMPLES_24K = 960


@dataclass
class Reference:
    wav24: np.ndarray
    wav16: np.ndarray
    segments: list[int]
    """Indices (into the accepted segments) of those it is made of, in order."""


def segment_embeddings(model, segments: list[Segment]) -> np.ndarray:
    """(n, 256) L2-normalised voice-encoder embeddings, one per segment."""
    return np.asarray(model.ve.embeds_from_wavs([s.wav16 for s in segments], sample_rate=S3_SR,
                                                as_spk=False), dtype=np.float32)


def speaker_embedding(embeddings: np.ndarray) -> np.ndarray:
    from chatterbox.models.voice_encoder import VoiceEncoder

    return VoiceEncoder.utt_to_spk_embed(embeddings).astype(np.float32)


def reference_lengths(model) -> tuple[int, int]:
    """(T3 prompt samples at 16 kHz, S3Gen reference samples at 24 kHz) the model's class reads."""
    cls = type(model)
    return int(cls.ENC_COND_LEN), int(cls.DEC_COND_LEN)


def build_reference(model, segments: list[Segment], similarity: np.ndarray) -> Reference:
    enc_len, dec_len = reference_lengths(model)
    need_s = max(enc_len / S3_SR, dec_len / S3GEN_SR)
    order = sorted(range(len(segments)), key=lambda i: (-float(similarity[i]), i))
    used, parts24 = [], []
    for i in order:
        if used:
            parts24.append(np.zeros(int(JOIN_SILENCE_S * S3GEN_SR), dtype=np.float32))
        parts24.append(segments[i].wav24)
        used.append(i)
        if sum(len(p) for p in parts24) / S3GEN_SR >= need_s:
            break
    wav24 = np.concatenate(parts24)
    parts16 = []
    for n, i in enumerate(used):
        if n:
            parts16.append(np.zeros(int(JOIN_SILENCE_S * S3_SR), dtype=np.float32))
        parts16.append(segments[i].wav16)
    wav24 = wav24[:dec_len]
    return Reference(wav24[: len(wav24) - len(wav24) % TOKEN_SAMPLES_24K], np.concatenate(parts16)[:enc_len],
                     used)


def build_voice(model, speaker: np.ndarray, reference: Reference, exaggeration: float) -> dict:
    """The voice's data, `{"t3": T3Cond's fields, "gen": S3Gen's reference}`, on the CPU."""
    import torch

    with torch.inference_mode():
        gen = model.s3gen.embed_ref(reference.wav24, S3GEN_SR, device=model.device)
        plen = model.t3.hp.speech_cond_prompt_len
        tokens, _ = model.s3gen.tokenizer.forward([reference.wav16], max_len=plen)
    t3 = {
        "speaker_emb": torch.from_numpy(speaker.copy()).reshape(1, -1),
        "clap_emb": None,
        "cond_prompt_speech_tokens": torch.atleast_2d(tokens).to("cpu", torch.long).clone(),
        "cond_prompt_speech_emb": None,
        "emotion_adv": exaggeration * torch.ones(1, 1, 1),
    }
    gen = {key: value.detach().to("cpu").clone() if isinstance(value, torch.Tensor) else value
           for key, value in gen.items()}
    tokens_n = gen["prompt_token"].shape[1]
    gen["prompt_feat"] = gen["prompt_feat"][:, : 2 * tokens_n]  # the format's invariant, whatever the length
    return {"t3": t3, "gen": gen}


def voice_bytes(data: dict) -> bytes:
    """The `.pth` bytes: torch.save of plain tensors and dicts (what `Conditionals.save` writes), which
    is byte-for-byte the same for the same tensors."""
    import torch

    buffer = io.BytesIO()
    torch.save(data, buffer)
    return buffer.getvalue()
