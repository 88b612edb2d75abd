"""Cloning a voice, start to end: recordings in, a checked `.pth` and its report out.

One function, `clone`, for both callers: the command-line tool (files from a directory) and the
predictor's `/voices` routes (files from an upload). Same recordings, same options, same model: the same
bytes, since every step is deterministic (the held-out split of `--tune` is drawn from `seed`).

The report is the sidecar's content: what was read and rejected (one line each, with why), the
segments used with their times, the quality figures (similarity between the voice's speaker embedding
and each segment's: mean and minimum; with tuning, the held-out loss before and after).
"""

from __future__ import annotations

import datetime
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

from . import conditioning, segments
from .recordings import Recording, Rejection, read_recording
from .tuning import TuneOptions, tune

TOOL = "chatterbox-clone-voice"
MAX_RECORDING_S = 600.0  # one file: ten minutes is more than a voice needs
MAX_TOTAL_S = 900.0  # of accepted speech; the plan asks for 1-5 minutes, beyond it adds little


class NoUsableAudio(Exception):
    """Every recording was rejected (or too little speech was left): nothing to clone from."""

    def __init__(self, rejections: list[Rejection], notes: list[str]):
        self.rejections, self.notes = rejections, notes
        lines = [str(r) for r in rejections] or ["no recordings were given"]
        super().__init__("no usable speech to clone from: " + "; ".join(lines))


@dataclass(frozen=True)
class Source:
    """One recording: its name (file name) and its bytes or path, with its transcript if known."""

    name: str
    data: bytes | Path
    transcript: str | None = None


@dataclass(frozen=True)
class CloneOptions:
    exaggeration: float = 0.5
    tune: TuneOptions | None = None
    """None: no tuning (the voice as the conditioning gives it)."""
    max_recording_s: float = MAX_RECORDING_S
    max_total_s: float = MAX_TOTAL_S


@dataclass
class CloneResult:
    voice: bytes
    report: dict
    rejections: list[Rejection] = field(default_factory=list)


def version() -> str:
    try:
        return metadata.version("chatterbox-predictor")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


@dataclass
class Analysis:
    """The recordings read, checked and cut (no model needed yet): what `build` makes the voice from."""

    segments: list[segments.Segment]
    rejections: list[Rejection]
    notes: list[str]
    recordings: list[dict]
    total_s: float
    started: float


def clone(model, variant, sources: list[Source], options: CloneOptions,
          progress: Callable[[str, int, int], None] | None = None) -> CloneResult:
    """Clones `sources` with `model` (a loaded Chatterbox model of `variant`); raises NoUsableAudio."""
    return build(model, variant, analyse(sources, options, progress), options, progress)


def analyse(sources: list[Source], options: CloneOptions,
            progress: Callable[[str, int, int], None] | None = None) -> Analysis:
    """Reads, checks and segments every recording; raises NoUsableAudio when none gives a segment."""
    started = time.monotonic()
    tell = progress or (lambda stage, done, total: None)
    vad = segments.load_vad()
    rejections, notes, recordings, accepted = [], [], [], []
    total_s = 0.0
    for n, source in enumerate(sources):
        tell("reading", n, len(sources))
        if total_s >= options.max_total_s:  # enough speech: the rest is not even decoded
            notes.append(f"{source.name}: not read: {options.max_total_s:g} s of speech are enough")
            recordings.append({"file": source.name, "accepted": False, "reason": "not needed"})
            continue
        decoded = read_recording(source.name, source.data, options.max_recording_s)
        if isinstance(decoded, Rejection):
            rejections.append(decoded)
            recordings.append({"file": source.name, "accepted": False, "reason": decoded.reason})
            continue
        result = segments.split(decoded, vad, source.transcript)
        notes.extend(f"{source.name}: {note}" for note in result.notes)
        entry = _recording_entry(decoded, result)
        recordings.append(entry)
        if result.rejection is not None:
            rejections.append(result.rejection)
            continue
        for segment in result.segments:
            if total_s + segment.duration_s > options.max_total_s:
                notes.append(f"{source.name}: segment at {segment.start_s:.1f} s left out: "
                             f"{options.max_total_s:g} s of speech are enough")
                continue
            total_s += segment.duration_s
            accepted.append(segment)
        entry["segments"] = sum(1 for s in accepted if s.source == source.name)
    tell("reading", len(sources), len(sources))
    if not accepted:
        raise NoUsableAudio(rejections, notes)
    return Analysis(accepted, rejections, notes, recordings, total_s, started)


def build(model, variant, analysis: Analysis, options: CloneOptions,
          progress: Callable[[str, int, int], None] | None = None) -> CloneResult:
    """The voice from the analysed segments: embedding, reference, optional tuning, the report."""
    tell = progress or (lambda stage, done, total: None)
    accepted, total_s = analysis.segments, analysis.total_s
    tell("embedding", 0, 1)
    embeddings = conditioning.segment_embeddings(model, accepted)
    speaker = conditioning.speaker_embedding(embeddings)
    similarity = embeddings @ speaker
    reference = conditioning.build_reference(model, accepted, similarity)
    voice = conditioning.build_voice(model, speaker, reference, options.exaggeration)
    tell("embedding", 1, 1)
    tuned = None
    if options.tune is not None:
        tuned = tune(model, variant, voice, accepted, options.tune,
                     progress=lambda done, total: tell("tuning", done, total))
        import torch

        voice["t3"]["speaker_emb"] = torch.from_numpy(tuned.speaker_emb).reshape(1, -1)
        similarity = embeddings @ tuned.speaker_emb  # the figures describe the voice as written

    raw = conditioning.voice_bytes(voice)
    quality = {"speaker_similarity_mean": round(float(np.mean(similarity)), 4),
               "speaker_similarity_min": round(float(np.min(similarity)), 4)}
    if tuned is not None:
        quality["held_out_loss_before"] = tuned.report["held_out_loss_before"]
        quality["held_out_loss_after"] = tuned.report["held_out_loss_after"]
    report = {
        "variant": variant.name,
        "sha256": hashlib.sha256(raw).hexdigest(),
        "bytes": len(raw),
        "tool": TOOL,
        "tool_version": version(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": str(model.device),
        "exaggeration": options.exaggeration,
        "total_duration_s": round(total_s, 2),
        "reference_duration_s": round(len(reference.wav24) / segments.S3GEN_SR, 2),
        "segments": [{"file": s.source, "start_s": s.start_s, "end_s": s.end_s,
                      "duration_s": round(s.duration_s, 2), "similarity": round(float(similarity[i]), 4),
                      "reference": i in reference.segments}
                     for i, s in enumerate(accepted)],
        "recordings": analysis.recordings,
        "rejected": [{"file": r.name, "reason": r.reason} for r in analysis.rejections],
        "notes": analysis.notes,
        "quality": quality,
        "tune": tuned.report if tuned is not None else None,
        "elapsed_s": round(time.monotonic() - analysis.started, 2),
    }
    return CloneResult(raw, report, analysis.rejections)


def _recording_entry(rec: Recording, result: segments.Split) -> dict:
    entry = {"file": rec.name, "accepted": result.rejection is None,
             "duration_s": round(rec.duration_s, 2), "sample_rate": rec.sample_rate,
             "channels": rec.channels}
    if result.snr_db is not None:
        entry["snr_db"] = round(result.snr_db, 1)
    if result.rejection is not None:
        entry["reason"] = result.rejection.reason
    return entry
