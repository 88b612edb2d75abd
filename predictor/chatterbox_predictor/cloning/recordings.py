"""Reading a speaker's recordings: WAV, FLAC, MP3 or Ogg (Vorbis or Opus) in, mono float32 out.

Everything is decoded by PyAV (FFmpeg, bundled in its wheels, already the predictor's encoder), from a
path or from the bytes of an upload, so the tool and the server read a file the same way. A recording
that cannot be used is never an exception to the caller: it comes back as a `Rejection` with one line
saying why, so that one bad file among twenty costs that file only.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# FFmpeg's demuxer names of the formats the tool reads (MP3 without ID3 is "mp3" too).
FORMATS = {"wav": "WAV", "flac": "FLAC", "mp3": "MP3", "ogg": "Ogg"}
SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus")
MAX_RATE = 192_000  # studio rates stop at 192 kHz; a higher one is a crafted file
MAX_CHANNELS = 8
# Decoded samples, all channels, of one file (10 minutes of 48 kHz stereo, 230 MB as float32): a small
# compressed upload of a huge rate and channel count must not decode into gigabytes.
MAX_DECODED_SAMPLES = 600 * 48_000 * 2
# Channels that differ by less than this (peak, relative to the loudest) are one signal recorded twice,
# which many recorders do; anything more may be two microphones or two speakers.
SAME_CHANNELS = 0.01


@dataclass(frozen=True)
class Rejection:
    """A recording left out, and why (one line, said to the user as it is)."""

    name: str
    reason: str

    def __str__(self) -> str:
        return f"{self.name}: rejected: {self.reason}"


@dataclass
class Recording:
    name: str
    samples: np.ndarray
    """Mono float32 at `sample_rate`, as decoded (before any resampling or gain)."""
    sample_rate: int
    channels: int
    """Channels in the file (several identical ones were folded into one)."""

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate


def read_recording(name: str, data: bytes | Path, max_seconds: float) -> Recording | Rejection:
    """Decodes one recording; longer than `max_seconds` is a rejection (the work is bounded per file)."""
    import av

    source = io.BytesIO(data) if isinstance(data, bytes) else str(data)
    try:
        with av.open(source, metadata_errors="ignore") as container:
            if container.format.name.split(",")[0] not in FORMATS or not container.streams.audio:
                kind = container.format.long_name or container.format.name
                return Rejection(name, f"not a WAV, FLAC, MP3 or Ogg recording (found {kind})")
            stream = container.streams.audio[0]
            rate = stream.codec_context.sample_rate
            channels = stream.codec_context.channels or 1
            if not rate or rate > MAX_RATE or channels > MAX_CHANNELS:
                return Rejection(name, f"{rate} Hz in {channels} channels: give at most {MAX_RATE} Hz in "
                                 f"{MAX_CHANNELS} channels (mono is best)")
            # Planar float32 at the file's own rate and layout: one row per channel.
            resampler = av.AudioResampler(format="fltp", layout=stream.codec_context.layout, rate=rate)
            parts, total = [], 0
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    part = out.to_ndarray()
                    parts.append(part)
                    total += part.shape[1]
                if total > max_seconds * rate:
                    return Rejection(name, f"longer than {max_seconds:g} s; split it into shorter files")
                if total * channels > MAX_DECODED_SAMPLES:
                    return Rejection(name, "too large once decoded (a high rate in many channels for its "
                                     "length); give a mono file at 48 kHz or less")
            for out in resampler.resample(None):
                parts.append(out.to_ndarray())
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        return Rejection(name, f"cannot be decoded as audio ({_short(exc)}); is it truncated or not audio?")
    if not parts or not rate:
        return Rejection(name, "holds no audio samples")
    samples = np.concatenate(parts, axis=1).astype(np.float32)
    if not np.isfinite(samples).all():
        return Rejection(name, "holds samples that are not finite numbers")
    if samples.shape[0] > 1:
        loudest = float(np.abs(samples).max()) or 1.0
        spread = float(np.abs(samples - samples[:1]).max()) / loudest
        if spread > SAME_CHANNELS:
            return Rejection(name, f"has {samples.shape[0]} channels that differ (a stereo recording may "
                             "hold more than one microphone or speaker): give one speaker in mono")
    return Recording(name, np.ascontiguousarray(samples[0]), rate, samples.shape[0])


def list_recordings(directory: Path) -> tuple[list[Path], list[Rejection]]:
    """The audio files of `directory` (not its subdirectories), by name; other files are reported."""
    found, skipped = [], []
    for path in sorted(Path(directory).iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        if path.suffix.lower() in SUFFIXES:
            found.append(path)
        elif path.suffix.lower() not in (".txt", ".json"):  # transcripts and sidecars live beside audio
            skipped.append(Rejection(path.name, "skipped: not a .wav, .flac, .mp3 or .ogg file"))
    return found, skipped


def _short(exc: Exception) -> str:
    text = (getattr(exc, "strerror", None) or str(exc)).strip() or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."
