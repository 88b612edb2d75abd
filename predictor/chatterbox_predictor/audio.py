"""Audio containers and codecs for streamed responses: WAV and raw PCM by hand (a header and samples),
everything compressed through PyAV (FFmpeg's encoders and muxers), chunk by chunk.

An `AudioEncoder` takes float32 mono chunks as the engine produces them and returns the bytes ready to
send after each one; `finish()` flushes the codec and the container. Speed changes go through FFmpeg's
`atempo` filter (time stretching that keeps the pitch), in the same streaming fashion.
"""

from __future__ import annotations

import struct
from fractions import Fraction

import numpy as np

FORMATS = ("wav", "pcm", "mp3", "opus", "aac", "flac")
MEDIA_TYPES = {
    "wav": "audio/wav",
    "pcm": "audio/pcm",  # OpenAI's pcm: 16-bit little-endian mono at 24 kHz, no header
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
}
# format -> (container, codec, output sample rate): Opus only runs at 48 kHz (or 8/12/16/24 kHz, but
# libopus' 24 kHz mode caps the bandwidth), so it is resampled; the others keep the model's 24 kHz.
_CODECS = {
    "mp3": ("mp3", "libmp3lame", None),
    "opus": ("ogg", "libopus", 48_000),
    "aac": ("adts", "aac", None),
    "flac": ("flac", "flac", None),
}
UNKNOWN_LENGTH = 0xFFFFFFFF  # RIFF and data sizes of a stream still being written (players read to EOF)


def wav_header(sample_rate: int, data_bytes: int | None = None, channels: int = 1) -> bytes:
    """A 44-byte PCM16 WAV header; without `data_bytes` the sizes say "unknown", for streaming."""
    data = UNKNOWN_LENGTH if data_bytes is None else data_bytes
    riff = UNKNOWN_LENGTH if data_bytes is None else 36 + data_bytes
    block = channels * 2
    return (b"RIFF" + struct.pack("<I", riff) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * block, block, 16)
            + b"data" + struct.pack("<I", data))


def pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def wav_bytes(samples: np.ndarray, sample_rate: int) -> bytes:
    """A complete WAV file with its real sizes."""
    data = pcm16(samples)
    return wav_header(sample_rate, len(data)) + data


class _Sink:
    """A write-only file for PyAV: no `seek`, so muxers write a stream that never goes back (FLAC then
    leaves its STREAMINFO totals at zero, which decoders accept)."""

    def __init__(self):
        self.buffer = bytearray()

    def write(self, data) -> int:
        self.buffer += data
        return len(data)

    def take(self) -> bytes:
        out = bytes(self.buffer)
        self.buffer.clear()
        return out


class AudioEncoder:
    """Float32 mono chunks in, bytes of `fmt` out, as they become available."""

    def __init__(self, fmt: str, sample_rate: int, speed: float = 1.0):
        if fmt not in FORMATS:
            raise ValueError(f"unknown audio format {fmt!r}; choose one of {FORMATS}")
        self.fmt = fmt
        self.sample_rate = sample_rate
        self.media_type = MEDIA_TYPES[fmt]
        self._started = False
        self._tempo = _Tempo(sample_rate, speed) if speed != 1.0 else None
        self._container = None
        if fmt in _CODECS:
            import av

            container, codec, rate = _CODECS[fmt]
            self._sink = _Sink()
            # Ogg would otherwise hold a second of packets per page: flush a page per 20 ms packet.
            options = {"page_duration": "20000"} if container == "ogg" else {}
            self._container = av.open(self._sink, mode="w", format=container, options=options)
            self._stream = self._container.add_stream(codec, rate=rate or sample_rate)
            self._stream.layout = "mono"
            self._resampler = av.AudioResampler(format=self._stream.format.name, layout="mono",
                                                rate=rate or sample_rate)
            self._pts = 0

    def encode(self, samples: np.ndarray) -> bytes:
        if self._tempo is not None:
            samples = self._tempo.push(samples)
        return self._encode(samples)

    def finish(self) -> bytes:
        tail = self._encode(self._tempo.finish()) if self._tempo is not None else b""
        if self._container is None:
            return tail + (self._prefix() if not self._started else b"")
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        return tail + self._sink.take()

    def _prefix(self) -> bytes:
        self._started = True
        return wav_header(self.sample_rate) if self.fmt == "wav" else b""

    def _encode(self, samples: np.ndarray) -> bytes:
        if self._container is None:
            head = b"" if self._started else self._prefix()
            return head + pcm16(samples)
        if not len(samples):
            return b""
        import av

        frame = av.AudioFrame.from_ndarray(np.asarray(samples, dtype=np.float32)[None, :], format="flt",
                                           layout="mono")
        frame.sample_rate = self.sample_rate
        for resampled in self._resampler.resample(frame):
            resampled.pts = self._pts
            resampled.time_base = Fraction(1, resampled.sample_rate)
            self._pts += resampled.samples
            for packet in self._stream.encode(resampled):
                self._container.mux(packet)
        return self._sink.take()


class _Tempo:
    """FFmpeg's atempo filter, chained (each instance takes 0.5 to 2.0), over float32 mono chunks."""

    def __init__(self, sample_rate: int, speed: float):
        import av.filter

        if not 0.25 <= speed <= 4.0:
            raise ValueError("speed must be between 0.25 and 4.0")
        self.sample_rate = sample_rate
        self.graph = av.filter.Graph()
        source = self.graph.add_abuffer(format="flt", sample_rate=sample_rate, layout="mono",
                                        time_base=Fraction(1, sample_rate))
        node, remaining = source, speed
        while remaining > 2.0 or remaining < 0.5:
            step = 2.0 if remaining > 2.0 else 0.5
            nxt = self.graph.add("atempo", str(step))
            node.link_to(nxt)
            node, remaining = nxt, remaining / step
        last = self.graph.add("atempo", f"{remaining:.6f}")
        node.link_to(last)
        sink = self.graph.add("abuffersink")
        last.link_to(sink)
        self.graph.configure()
        self._pts = 0

    def push(self, samples: np.ndarray) -> np.ndarray:
        import av

        if not len(samples):
            return np.zeros(0, dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(np.asarray(samples, dtype=np.float32)[None, :], format="flt",
                                           layout="mono")
        frame.sample_rate = self.sample_rate
        frame.pts = self._pts
        frame.time_base = Fraction(1, self.sample_rate)
        self._pts += frame.samples
        self.graph.push(frame)
        return self._pull()

    def finish(self) -> np.ndarray:
        self.graph.push(None)
        return self._pull()

    def _pull(self) -> np.ndarray:
        import av

        out = []
        while True:
            try:
                frame = self.graph.pull()
            except (av.BlockingIOError, av.EOFError):
                break
            out.append(frame.to_ndarray().reshape(-1))
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, dtype=np.float32)
