"""Voices: `Conditionals` saved with torch.save (the plan's `.pth`), loaded safely, cached on the device.

A voice file is untrusted input. The shared `chatterbox_voicefile` package reads it without torch,
building nothing but tensors and plain containers, and checks its structure (keys, dtypes, shapes, token
ranges, finite values) against what the variant's T3 and S3Gen need; only then does
`torch.load(weights_only=True)` build the tensors the library sees. The cache holds loaded voices on
the device, bounded in bytes, least recently used out first.
"""

from __future__ import annotations

import io
import logging
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import chatterbox_voicefile as voicefile
import torch

from .errors import InvalidVoice, InvalidVoiceId, PayloadTooLarge, VoiceNotFound
from .variants import Variant

log = logging.getLogger(__name__)


def voice_file_name(voice_id: str) -> str:
    """`voice_id` with or without the .pth suffix -> the file name; anything path-like is refused."""
    try:
        return voicefile.voice_file_name(voice_id)
    except voicefile.InvalidVoiceId as exc:
        raise InvalidVoiceId(str(exc)) from exc


def check_voice_bytes(raw: bytes, variant: Variant) -> None:
    """Raises the engine's typed error when `raw` is not a voice `variant` can load (the shared check,
    the one the voice operator runs too)."""
    try:
        voicefile.read_voice(raw, variant.name)
    except voicefile.VoiceFileTooLarge as exc:
        raise PayloadTooLarge(str(exc)) from exc
    except voicefile.InvalidVoiceFile as exc:
        raise InvalidVoice(str(exc)) from exc


def load_voice_bytes(raw: bytes, variant: Variant):
    """Parses and validates a voice file's bytes; returns the library's `Conditionals` on the CPU.

    Two readers, both weights-only: the shared torch-free one decides, then torch.load builds the
    tensors from a file already known to be plain.
    """
    from chatterbox.models.t3.modules.cond_enc import T3Cond
    from chatterbox.tts import Conditionals

    check_voice_bytes(raw, variant)
    try:
        with warnings.catch_warnings():  # a foreign pickle protocol only warns; weights_only decides
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            data = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as exc:  # the shared reader accepted it, so this is a disagreement between the two
        raise InvalidVoice(f"not a voice file: {type(exc).__name__}: {str(exc)[:200]}") from exc
    return Conditionals(T3Cond(**data["t3"]), data["gen"])


def conditionals_nbytes(conds) -> int:
    tensors = [v for v in (*vars(conds.t3).values(), *conds.gen.values()) if isinstance(v, torch.Tensor)]
    return sum(t.numel() * t.element_size() for t in tensors)


@dataclass
class _Entry:
    key: tuple
    conds: object
    nbytes: int


class VoiceCache:
    """Loaded voices on the device, least recently used evicted first, bounded in bytes.

    An entry is keyed by the file's identity (size and modification time), so a voice replaced on disk
    is loaded anew; `evict(voice_id)` drops it at once. Thread-safe.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    @property
    def nbytes(self) -> int:
        with self._lock:  # read by /metrics scrapes while the worker and the watcher change the entries
            return self._nbytes_locked()

    def _nbytes_locked(self) -> int:
        return sum(e.nbytes for e in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, voice_id: str, key: tuple, load: Callable[[], object]):
        with self._lock:
            entry = self._entries.get(voice_id)
            if entry is not None and entry.key == key:
                self._entries.move_to_end(voice_id)
                self.hits += 1
                return entry.conds
            self.misses += 1
        conds = load()  # outside the lock: reading and validating a file takes milliseconds
        nbytes = conditionals_nbytes(conds)
        with self._lock:
            self._entries[voice_id] = _Entry(key, conds, nbytes)
            self._entries.move_to_end(voice_id)
            while len(self._entries) > 1 and self._nbytes_locked() > self.max_bytes:
                self._entries.popitem(last=False)
        return conds

    def evict(self, voice_id: str) -> None:
        with self._lock:
            self._entries.pop(voice_id, None)


class VoiceLibrary:
    """Voices of one variant from a directory (the /voices volume), through a VoiceCache.

    Built once per server and shared: the engine loads voices through it, the API's `VoiceDirectory`
    writes and removes files and evicts what changed. The checkpoint's built-in voice is the engine's.
    """

    def __init__(self, directory: Path, variant: Variant, device: str, cache: VoiceCache):
        self.directory = Path(directory)
        self.variant = variant
        self.device = device
        self.cache = cache

    def path(self, voice_id: str) -> Path:
        return self.directory / voice_file_name(voice_id)

    def exists(self, voice_id: str) -> bool:
        """Whether a file for this id is there; an invalid id names no file."""
        try:
            return self.path(voice_id).is_file()
        except InvalidVoice:
            return False

    def get(self, voice_id: str):
        """The voice's Conditionals on the device, from the cache or the file."""
        path = self.path(voice_id)
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise VoiceNotFound(f"Voice '{voice_id}' not found.") from None
        name = path.stem

        def load():
            return load_voice_bytes(path.read_bytes(), self.variant).to(self.device)

        return self.cache.get(name, (stat.st_size, stat.st_mtime_ns), load)
