"""Fine-tuning a voice on its speaker's segments, inside the voice file's format (`--tune`).

What is fitted is the voice's own continuous T3 conditioning: the speaker embedding. Of the rest of a
`Conditionals`, the prompt tokens are discrete, the exaggeration is replaced by every request's own, and
S3Gen's reference (mel features, x-vector) does not enter T3 at all. So the server serves a tuned voice
with no change, and nothing of the model itself moves.

The objective is T3's teacher-forced cross-entropy of each segment's speech tokens (the speech
tokenizer's, end of speech included), laid out exactly as the engine's decoding sees them (conditioning,
text, start of speech, tokens; `t3_stream.T3Stream`). The text is the segment's transcript where one is
known (a `.txt` beside a recording that gave one segment), else none: then the loss measures how well
the voice predicts the speaker's sound regardless of words. Some segments are held out; their loss
before and after is the honest measure, and the embedding kept is the one with the lowest held-out loss
seen (checked every `eval_every` steps). After each step the embedding goes back onto the unit sphere,
where the voice encoder's embeddings (and so T3's training inputs) live.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .segments import Segment

MAX_TUNE_TOKENS = 375  # 15 s of speech, the longest segment


class TooFewSegments(ValueError):
    """Tuning holds segments out to measure itself: one segment is not enough."""


@dataclass(frozen=True)
class TuneOptions:
    steps: int = 50
    learning_rate: float = 0.002  # Adam moves each coordinate by about this much a step
    time_limit_s: float = 600.0
    holdout_fraction: float = 0.2
    eval_every: int = 5
    seed: int = 0
    language: str | None = None


@dataclass
class TuneResult:
    speaker_emb: np.ndarray
    report: dict


@dataclass
class Example:
    text: object  # (1, n) long tensor
    speech: object  # (1, m) long tensor


def speech_tokens(model, segment: Segment):
    import torch

    with torch.inference_mode():
        tokens, _ = model.s3gen.tokenizer.forward([segment.wav16], max_len=MAX_TUNE_TOKENS)
    return torch.atleast_2d(tokens).to(model.device, torch.long).clone()  # out of inference mode


def teacher_forced_logits(model, variant, speaker_emb, prompt_tokens, emotion, example: Example):
    """(logits, targets): T3's speech logits at each of the segment's tokens and after the last, laid out
    as `T3Stream` decodes, and the tokens they should predict (the segment's, then end of speech)."""
    import torch
    from chatterbox.models.t3.modules.cond_enc import T3Cond

    t3 = model.t3
    dtype = next(t3.parameters()).dtype
    cond = T3Cond(speaker_emb=speaker_emb.to(dtype), cond_prompt_speech_tokens=prompt_tokens,
                  emotion_adv=emotion.to(dtype))  # built anew: prepare_conditioning writes into it
    start = t3.hp.start_speech_token * torch.ones(1, 1, dtype=torch.long, device=t3.device)
    head, _ = t3.prepare_input_embeds(t3_cond=cond, text_tokens=example.text, speech_tokens=start,
                                      cfg_weight=0.0)
    speech = example.speech
    n = speech.size(1)
    if variant.guided:  # the Llama variants feed start of speech twice, then positions 1, 2, ...
        follow = torch.cat([start, speech], dim=1)
        tail = t3.speech_emb(follow) + t3.speech_pos_emb.get_fixed_embedding(
            torch.arange(n + 1, device=t3.device))
    else:
        tail = t3.speech_emb(speech)
    hidden = t3.tfmr(inputs_embeds=torch.cat([head, tail], dim=1), use_cache=False).last_hidden_state
    logits = t3.speech_head(hidden[:, -(n + 1):]).float()[0]
    stop = torch.full((1, 1), t3.hp.stop_speech_token, dtype=torch.long, device=t3.device)
    return logits, torch.cat([speech, stop], dim=1)[0]


def teacher_forced_loss(model, variant, speaker_emb, prompt_tokens, emotion, example: Example):
    """Mean cross-entropy of the segment's speech tokens and the end of speech, given the voice."""
    import torch.nn.functional as F

    logits, targets = teacher_forced_logits(model, variant, speaker_emb, prompt_tokens, emotion, example)
    return F.cross_entropy(logits, targets)


def tune(model, variant, voice: dict, segments: list[Segment], options: TuneOptions,
         progress: Callable[[int, int], None] | None = None) -> TuneResult:
    """Fits `voice["t3"]["speaker_emb"]` to `segments` (see the module); needs two segments or more."""
    import torch

    if len(segments) < 2:
        raise TooFewSegments("tuning needs at least two segments (some are held out to measure it); give "
                         "more or longer recordings")
    started = time.monotonic()
    device = model.device
    examples = []
    for segment in segments:
        text = variant.text_tokens(model, variant.normalize(segment.transcript) if segment.transcript
                                   else "", options.language).to(device).clone()
        examples.append(Example(text, speech_tokens(model, segment)))
    order = list(range(len(segments)))
    random.Random(options.seed).shuffle(order)
    held_n = min(len(order) - 1, max(1, round(options.holdout_fraction * len(order))))
    held, train = sorted(order[:held_n]), sorted(order[held_n:])

    prompt = voice["t3"]["cond_prompt_speech_tokens"].to(device)
    emotion = voice["t3"]["emotion_adv"].to(device)
    param = voice["t3"]["speaker_emb"].to(device, torch.float32).clone().requires_grad_(True)

    def mean_loss(indices, grad: bool):
        with torch.set_grad_enabled(grad):
            losses = [teacher_forced_loss(model, variant, param, prompt, emotion, examples[i])
                      for i in indices]
            return torch.stack(losses).mean()

    train_before = float(mean_loss(train, False))
    held_before = float(mean_loss(held, False))
    best_held, best = held_before, param.detach().clone()
    optimiser = torch.optim.Adam([param], lr=options.learning_rate)
    stopped_by, step, history = "steps", 0, [{"step": 0, "train": train_before, "held_out": held_before}]
    while step < options.steps:
        if time.monotonic() - started > options.time_limit_s:
            stopped_by = "time limit"
            break
        loss = mean_loss(train, True)
        (param.grad,) = torch.autograd.grad(loss, [param])  # the model's own weights get no gradient
        optimiser.step()
        with torch.no_grad():
            param /= param.norm()
        step += 1
        if progress:
            progress(step, options.steps)
        if step % options.eval_every == 0 or step == options.steps:
            held_now = float(mean_loss(held, False))
            history.append({"step": step, "train": float(loss), "held_out": held_now})
            if held_now < best_held:
                best_held, best = held_now, param.detach().clone()
    train_last = float(mean_loss(train, False))  # where gradient descent ended
    with torch.no_grad():
        param.copy_(best)
    train_after = float(mean_loss(train, False))  # the embedding kept
    report = {
        "steps": step, "learning_rate": options.learning_rate, "stopped_by": stopped_by,
        "time_limit_s": options.time_limit_s, "elapsed_s": round(time.monotonic() - started, 2),
        "held_out_segments": held, "train_segments": train,
        "train_loss_before": round(train_before, 4), "train_loss_last": round(train_last, 4),
        "train_loss_after": round(train_after, 4),
        "held_out_loss_before": round(held_before, 4), "held_out_loss_after": round(best_held, 4),
        "with_transcripts": sum(1 for s in segments if s.transcript),
        "history": [{k: round(v, 4) if isinstance(v, float) else v for k, v in h.items()} for h in history],
    }
    return TuneResult(best.to("cpu").numpy().reshape(-1).astype(np.float32), report)
