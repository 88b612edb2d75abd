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
import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import chatterbox_voicefile as voicefile
import torch
from chatterbox_voicefile import VOICE_SUFFIX
from chatterbox_voicefile.files import fsync_dir, write_atomic

from .errors import InvalidVoice, InvalidVoiceId, PayloadTooLarge, VoiceExists, VoiceNotFound
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
            while len(self._entries) > 1 and self.nbytes > self.max_bytes:
                self._entries.popitem(last=False)
        return conds

    def evict(self, voice_id: str) -> None:
        with self._lock:
            self._entries.pop(voice_id, None)


class VoiceLibrary:
    """Voices of one variant from a directory (the /voices volume), through a VoiceCache."""

    def __init__(self, directory: Path, variant: Variant, device: str, cache: VoiceCache,
                 builtin=None):
        self.directory = Path(directory)
        self.variant = variant
        self.device = device
        self.cache = cache
        self.builtin = builtin  # the checkpoint's conds.pt, already on the device

    def path(self, voice_id: str) -> Path:
        return self.directory / voice_file_name(voice_id)

    def exists(self, voice_id: str) -> bool:
        """Whether a file for this id is there; an invalid id names no file."""
        try:
            return self.path(voice_id).is_file()
        except InvalidVoice:
            return False

    def get(self, voice_id: str | None):
        """The voice's Conditionals on the device; None or "" selects the checkpoint's built-in voice."""
        if not voice_id:
            if self.builtin is None:
                raise VoiceNotFound("this checkpoint has no built-in voice: name a voice_id")
            return self.builtin
        path = self.path(voice_id)
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise VoiceNotFound(f"Voice '{voice_id}' not found.") from None
        name = path.stem

        def load():
            return load_voice_bytes(path.read_bytes(), self.variant).to(self.device)

        return self.cache.get(name, (stat.st_size, stat.st_mtime_ns), load)


@dataclass(frozen=True)
class ScanResult:
    voices: list[str]
    added: list[str]
    removed: list[str]
    changed: list[str]


class VoiceDirectory:
    """The voice files of a directory: listing, atomic uploads, deletion, and noticing what others changed.

    Files land atomically (a hidden temporary file in the same directory, fsync, then a rename or a
    hard link, so a reader sees the old file or the new one, never half of one), and a replaced or
    removed voice leaves the cache at once. `scan()` compares the directory with the previous scan;
    the server calls it on a timer and from the reload endpoint.
    """

    def __init__(self, library: VoiceLibrary):
        self.library = library
        self.directory = library.directory
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[int, int]] = {}

    def _snapshot(self) -> dict[str, tuple[int, int]]:
        found = {}
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return found
        for entry in entries:
            stem = entry.name[: -len(VOICE_SUFFIX)]
            if not entry.name.endswith(VOICE_SUFFIX) or not voicefile.is_voice_stem(stem):
                continue  # temporary files start with a dot; anything else is not ours to serve
            try:
                if entry.is_file():
                    stat = entry.stat()
                    found[stem] = (stat.st_size, stat.st_mtime_ns)
            except FileNotFoundError:
                continue  # removed while we looked
        return found

    def list(self) -> list[str]:
        return sorted(self._snapshot())

    def scan(self) -> ScanResult:
        now = self._snapshot()
        with self._lock:
            before, self._seen = self._seen, now
        added = sorted(set(now) - set(before))
        removed = sorted(set(before) - set(now))
        changed = sorted(k for k in set(now) & set(before) if now[k] != before[k])
        for voice_id in removed + changed:
            self.library.cache.evict(voice_id)
        if added or removed or changed:
            log.info("voices changed on disk: added %s, removed %s, replaced %s", added, removed, changed)
        return ScanResult(sorted(now), added, removed, changed)

    def save(self, voice_id: str, raw: bytes, overwrite: bool = False) -> str:
        """Validates and stores a voice; returns its file name. Nothing is left behind on failure."""
        name = voice_file_name(voice_id)
        # Refuses anything that is not a loadable voice; the tensors are built when the voice is used.
        check_voice_bytes(raw, self.library.variant)
        target = self.directory / name
        if target.exists() and not overwrite:
            raise VoiceExists(f"Voice '{name}' already exists; upload with overwrite=true to replace it.")
        try:
            write_atomic(target, raw, overwrite=overwrite)
        except FileExistsError:  # the name was taken between the check above and the link
            raise VoiceExists(f"Voice '{name}' already exists; upload with overwrite=true to "
                              "replace it.") from None
        self.library.cache.evict(target.stem)
        return name

    def delete(self, voice_id: str) -> str:
        name = voice_file_name(voice_id)
        try:
            (self.directory / name).unlink()
        except FileNotFoundError:
            raise VoiceNotFound(f"Voice '{voice_id}' not found.") from None
        fsync_dir(self.directory)
        self.library.cache.evict(name[: -len(VOICE_SUFFIX)])
        return name

