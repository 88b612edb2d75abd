"""Real speech for the cloning tests: espeak-ng (Debian's package) in several voices, and the faults each
of the cloning tool's checks must catch, made from it: clipping, silence, background noise, two
different channels, a file too short, one that is not audio at all, a truncated one.

espeak-ng speaks a formant synthesis, not a recording of a person, but it is speech as the voice
activity detector and the encoders see it: voiced sounds, pauses between phrases, a speaker's pitch.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from tests.support.controlplane import REPO_ROOT

# (espeak-ng voice, words per minute, pitch 0-99, text): five speakers, each 7-10 s of speech.
SPEAKERS = [
    ("en-us", 150, 50, "The quick brown fox jumps over the lazy dog. Meanwhile, the orchestra tuned their "
     "instruments, waiting for the conductor to arrive."),
    ("en-us+f3", 140, 60, "A gentle rain began to fall over the quiet village. Children ran home from "
     "school, laughing and splashing through the puddles on the road."),
    ("en-gb", 160, 40, "Science is a way of thinking much more than it is a body of knowledge. Every answer "
     "brings a new question, and that is the joy of it."),
    ("en-gb-x-rp", 150, 45, "Good morning everyone, and welcome to the annual meeting of the gardening "
     "society. Today we talk about roses and tomatoes."),
    ("en-us+m3", 155, 35, "The train leaves the station at seven every morning. Passengers read their "
     "papers and watch the fields roll by the windows."),
]
LONG_TEXT = " ".join(text for *_, text in SPEAKERS)  # one speaker reading everything: ~45 s, many pauses


def ensure_espeak() -> None:
    subprocess.run(["bash", str(REPO_ROOT / "hack/system-deps.sh"), "espeak-ng"], check=True, timeout=600)


def espeak(path: Path, text: str, voice: str = "en-us", wpm: int = 150, pitch: int = 50) -> Path:
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(wpm), "-p", str(pitch), "-w", str(path), text],
                   check=True, timeout=120)
    return path


def read(path: Path) -> tuple[np.ndarray, int]:
    samples, rate = soundfile.read(path, dtype="float32")
    return samples, rate


@dataclass
class Recordings:
    """Paths of the recordings a session's cloning tests use (under one temporary directory)."""

    root: Path
    speakers: list[Path]
    """One clean recording per SPEAKERS entry (WAV, 22.05 kHz mono as espeak-ng writes it)."""
    long: Path
    """One speaker for ~45 s: several segments."""
    clipped: Path
    silent: Path
    noisy: Path
    stereo: Path
    short: Path
    not_audio: Path
    truncated: Path

    def directory(self, name: str, files: list[Path]) -> Path:
        """A fresh directory holding copies of `files` (the tool reads a directory)."""
        target = self.root / name
        target.mkdir()
        for f in files:
            (target / f.name).write_bytes(f.read_bytes())
        return target


def make_recordings(root: Path) -> Recordings:
    ensure_espeak()
    root.mkdir(parents=True, exist_ok=True)
    speakers = [espeak(root / f"speaker{n + 1}.wav", text, voice, wpm, pitch)
                for n, (voice, wpm, pitch, text) in enumerate(SPEAKERS)]
    long = espeak(root / "long.wav", LONG_TEXT, "en-us", 150, 50)
    speech, rate = read(speakers[3])
    clipped = root / "clipped.wav"
    soundfile.write(clipped, np.clip(speech * 12, -1, 1), rate)  # 12x the gain: a fifth at full scale
    silent = root / "silent.wav"
    soundfile.write(silent, np.zeros(8 * rate, dtype=np.float32), rate)
    other, _ = read(speakers[2])
    rng = np.random.default_rng(0)
    noisy = root / "noisy.wav"  # white noise 5 dB below the speech
    power = float(np.mean(other ** 2))
    soundfile.write(noisy, other + rng.normal(0, np.sqrt(power / 10 ** 0.5), len(other)).astype(np.float32),
                    rate)
    stereo = root / "stereo.wav"  # two microphones: the second hears the speaker later and softer
    soundfile.write(stereo, np.stack([other, 0.7 * np.roll(other, 3000)], axis=1), rate)
    short = root / "short.wav"
    soundfile.write(short, speech[: int(2.5 * rate)], rate)
    not_audio = root / "notes.wav"
    not_audio.write_bytes(b"these are my notes, not a recording\n" * 20)
    truncated = root / "truncated.mp3"
    whole = root / "whole.mp3"
    soundfile.write(whole, speech, rate, format="MP3")
    truncated.write_bytes(whole.read_bytes()[:600])  # the first frames of an upload that broke off
    whole.unlink()
    return Recordings(root, speakers, long, clipped, silent, noisy, stereo, short, not_audio, truncated)


def encode(path: Path, target: Path, fmt: str) -> Path:
    """`path` re-encoded as FLAC, MP3 or Ogg Vorbis (through libsndfile)."""
    samples, rate = read(path)
    subtype = {"FLAC": None, "MP3": "MPEG_LAYER_III", "OGG": "VORBIS"}[fmt]
    soundfile.write(target, samples, rate, format=fmt, subtype=subtype)
    return target
