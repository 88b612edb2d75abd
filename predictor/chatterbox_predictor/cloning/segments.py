"""From one recording to clean 5-15 s speech segments: level checks, voice activity, cuts at pauses,
loudness.

The checks run on the samples as decoded (resampling would smooth a clipped plateau away):
- too short: under `MIN_SEGMENT_S` in all, or no stretch of speech that long between long pauses;
- silent: the loudest sample under `SILENT_DBFS`, or the voice activity detector hears no speech;
- clipped: more than `CLIPPED_FRACTION` of the samples at full scale;
- noisy: speech less than `NOISY_SNR_DB` above the background (the frames between speech).
Voice activity comes from Silero VAD (PyPI `silero-vad`, its model inside the wheel). Segments end at
pauses the detector found; a long stretch without one is cut where it is least speech-like (the
detector's own rule at its maximum duration). Each segment is then normalised to the loudness the
library gives its reference clips (-27 LUFS).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from .recordings import Recording, Rejection

S3GEN_SR = 24_000  # S3Gen's reference and the decoder's features
S3_SR = 16_000  # the speech tokenizer, the voice encoder and the detector
MIN_SEGMENT_S = 5.0
MAX_SEGMENT_S = 15.0
JOIN_PAUSE_S = 2.0  # speech on both sides of a shorter pause may share a segment
SILENT_DBFS = -50.0  # a recording whose loudest sample is below this holds nothing usable
CLIPPED_FRACTION = 0.001  # one sample in a thousand at full scale is audible distortion
FULL_SCALE = 0.999  # 16-bit full scale is 32767/32768
NOISY_SNR_DB = 15.0  # below this the voice encoder hears the room as much as the speaker
TARGET_LUFS = -27.0  # what the library's norm_loudness gives a reference clip
FRAME_S = 0.02
_vad_lock = threading.Lock()


@dataclass
class Segment:
    source: str
    start_s: float
    end_s: float
    wav24: np.ndarray
    """Loudness-normalised samples at 24 kHz."""
    wav16: np.ndarray
    """The same at 16 kHz (resampled after normalisation, as the library does)."""
    snr_db: float
    transcript: str | None = None

    @property
    def duration_s(self) -> float:
        return len(self.wav24) / S3GEN_SR


@dataclass
class Split:
    """What one recording gave: segments, or the reason it gave none; `notes` say what was left out."""

    name: str
    duration_s: float
    segments: list[Segment]
    rejection: Rejection | None = None
    snr_db: float | None = None
    notes: tuple[str, ...] = ()


def load_vad():
    """Silero's detector (TorchScript). Importing silero_vad sets torch to one thread for the whole
    process (its model module calls torch.set_num_threads(1)), which would slow every later model
    call: the setting is put back."""
    import torch

    threads = torch.get_num_threads()
    with _vad_lock:
        try:
            from silero_vad import load_silero_vad
        finally:
            torch.set_num_threads(threads)
        return load_silero_vad()


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    import librosa

    if rate == target:
        return samples.astype(np.float32, copy=False)
    return librosa.resample(samples, orig_sr=rate, target_sr=target).astype(np.float32)


def _dbfs(value: float) -> float:
    return 20 * np.log10(value) if value > 0 else float("-inf")


def level_problem(rec: Recording) -> str | None:
    """Why the recording's level makes it unusable, before any speech analysis (None: it does not)."""
    if rec.duration_s < MIN_SEGMENT_S:
        return (f"too short: {rec.duration_s:.1f} s; each recording needs at least {MIN_SEGMENT_S:g} s "
                "of speech")
    peak = float(np.abs(rec.samples).max()) if len(rec.samples) else 0.0
    if peak == 0:
        return "silent: it holds nothing but digital silence"
    if _dbfs(peak) < SILENT_DBFS:
        return f"silent: its loudest sample is {_dbfs(peak):.0f} dBFS"
    clipped = float(np.mean(np.abs(rec.samples) >= FULL_SCALE))
    if clipped > CLIPPED_FRACTION:
        return (f"clipped: {100 * clipped:.1f}% of its samples are at full scale (distorted); record it "
                "again at a lower gain")
    return None


def speech_regions(wav16: np.ndarray, vad) -> list[tuple[float, float]]:
    """(start, end) seconds of speech; stretches longer than MAX_SEGMENT_S are cut by the detector."""
    import torch
    from silero_vad import get_speech_timestamps

    with _vad_lock, torch.inference_mode():  # the detector keeps state between windows
        found = get_speech_timestamps(torch.from_numpy(wav16), vad, sampling_rate=S3_SR,
                                      min_speech_duration_ms=250, min_silence_duration_ms=300,
                                      speech_pad_ms=100, max_speech_duration_s=MAX_SEGMENT_S)
    return [(r["start"] / S3_SR, r["end"] / S3_SR) for r in found]


def snr_db(wav16: np.ndarray, regions: list[tuple[float, float]]) -> float:
    """Speech power over background power, in dB: the background is the frames outside speech, or the
    quietest tenth of all frames where pauses are too few to measure (capped at 99 dB: digital silence)."""
    frame = int(FRAME_S * S3_SR)
    n = len(wav16) // frame
    if n == 0:
        return 0.0
    power = np.mean(wav16[: n * frame].reshape(n, frame).astype(np.float64) ** 2, axis=1)
    speech = np.zeros(n, dtype=bool)
    for start, end in regions:
        speech[int(start / FRAME_S): int(np.ceil(end / FRAME_S))] = True
    if not speech.any():
        return 0.0
    background = power[~speech] if (~speech).sum() * FRAME_S >= 0.5 else np.sort(power)[: max(1, n // 10)]
    noise = float(np.mean(background))
    signal = float(np.mean(power[speech])) - noise
    if signal <= 0:
        return 0.0
    return 99.0 if noise <= 1e-12 else min(99.0, 10 * np.log10(signal / noise))


def group(regions: list[tuple[float, float]]) -> tuple[list[tuple[float, float]], list[str]]:
    """Speech regions into segments of MIN_SEGMENT_S..MAX_SEGMENT_S, cut only at pauses: each region
    joins the segment before it while the two fit in MAX_SEGMENT_S across a pause of at most
    JOIN_PAUSE_S. A piece still shorter than MIN_SEGMENT_S could join neither neighbour (either would
    have taken it), so it is left out, and said so."""
    spans: list[list[float]] = []
    for start, end in regions:
        if spans and end - spans[-1][0] <= MAX_SEGMENT_S and start - spans[-1][1] <= JOIN_PAUSE_S:
            spans[-1][1] = end
        else:
            spans.append([start, end])
    kept, notes = [], []
    for start, end in spans:
        if end - start >= MIN_SEGMENT_S:
            kept.append((start, end))
        else:
            notes.append(f"left out {end - start:.1f} s of speech at {start:.1f} s: shorter than "
                         f"{MIN_SEGMENT_S:g} s between pauses")
    return kept, notes


def normalise_loudness(wav: np.ndarray, rate: int) -> np.ndarray:
    """To TARGET_LUFS, as the library normalises its references, without pushing a peak past 0.99."""
    import pyloudnorm

    try:
        loudness = pyloudnorm.Meter(rate).integrated_loudness(wav.astype(np.float64))
    except ValueError:  # shorter than one gating block: cannot be measured, left as it is
        return wav
    if not np.isfinite(loudness):
        return wav
    gain = 10 ** ((TARGET_LUFS - loudness) / 20)
    peak = float(np.abs(wav).max()) * gain
    if peak > 0.99:
        gain *= 0.99 / peak
    return (wav * gain).astype(np.float32)


def split(rec: Recording, vad, transcript: str | None = None) -> Split:
    """Checks `rec` and cuts its speech into normalised segments (see the module)."""
    problem = level_problem(rec)
    if problem:
        return Split(rec.name, rec.duration_s, [], Rejection(rec.name, problem))
    wav24 = resample(rec.samples, rec.sample_rate, S3GEN_SR)
    wav16 = resample(wav24, S3GEN_SR, S3_SR)
    regions = speech_regions(wav16, vad)
    if not regions:
        return Split(rec.name, rec.duration_s, [], Rejection(
            rec.name, "silent: the voice activity detector found no speech in it"))
    snr = snr_db(wav16, regions)
    if snr < NOISY_SNR_DB:
        return Split(rec.name, rec.duration_s, [], Rejection(
            rec.name, f"noisy: its speech is only {snr:.0f} dB above the background (at least "
            f"{NOISY_SNR_DB:g} dB is needed); record it in a quieter place"), snr_db=snr)
    spans, notes = group(regions)
    if not spans:
        speech = sum(end - start for start, end in regions)
        return Split(rec.name, rec.duration_s, [], Rejection(
            rec.name, f"too short: {speech:.1f} s of speech, and no {MIN_SEGMENT_S:g} s of it without a "
            "long pause"), snr_db=snr, notes=tuple(notes))
    segments = []
    for start, end in spans:
        piece = normalise_loudness(wav24[int(start * S3GEN_SR): int(end * S3GEN_SR)], S3GEN_SR)
        # A transcript belongs to its recording: it is only known to match when that is one segment.
        text = transcript if len(spans) == 1 else None
        segments.append(Segment(rec.name, round(start, 2), round(end, 2), piece,
                                resample(piece, S3GEN_SR, S3_SR), round(snr, 1), text))
    return Split(rec.name, rec.duration_s, segments, snr_db=snr, notes=tuple(notes))
