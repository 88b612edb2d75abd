"""Voices: `Conditionals` saved with torch.save (the plan's `.pth`), loaded safely, cached on the device.

A voice file is untrusted input. It is read with `torch.load(weights_only=True)`, which refuses any
pickle that would build objects other than tensors and plain containers, and its structure (keys,
dtypes, shapes, token ranges, finite values) is checked against what the variant's T3 and S3Gen need
before the library sees it. The cache holds loaded voices on the device, bounded in bytes, least
recently used out first.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import re
import tempfile
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import InvalidVoice, InvalidVoiceId, PayloadTooLarge, VoiceExists, VoiceNotFound
from .variants import TURBO, Variant

log = logging.getLogger(__name__)

VOICE_SUFFIX = ".pth"
# A real voice is ~0.2 MB (10 s of prompt); 16 MiB leaves room and stops a huge upload early.
MAX_VOICE_BYTES = 16 * 1024 * 1024
# A voice id is a file name stem: letters, digits, '.', '_', '-'; no path separators, no leading dot.
VOICE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
SPEECH_VOCAB = 6561  # S3 speech tokens; ids above are T3's start/stop tokens, never in a prompt
SPEAKER_EMBED = 256  # VoiceEncoder embedding (T3's speaker conditioning)
XVECTOR = 192  # CAMPPlus x-vector (S3Gen's speaker embedding)
MELS = 80
# S3Gen's reference is cut to 10 s (25 tokens/s); T3's prompt to 150 (English) or 375 (Turbo) tokens.
MAX_PROMPT_TOKENS = 250
T3_PROMPT_LEN = {"turbo": 375, "english": 150, "multilingual": 150}

T3_KEYS = {"speaker_emb", "clap_emb", "cond_prompt_speech_tokens", "cond_prompt_speech_emb", "emotion_adv"}
GEN_KEYS = {"prompt_token", "prompt_token_len", "prompt_feat", "prompt_feat_len", "embedding"}


def _is_voice_stem(stem: str) -> bool:
    return bool(VOICE_ID_RE.match(stem)) and ".." not in stem


def voice_file_name(voice_id: str) -> str:
    """`voice_id` with or without the .pth suffix -> the file name; anything path-like is refused."""
    stem = voice_id[: -len(VOICE_SUFFIX)] if voice_id.endswith(VOICE_SUFFIX) else voice_id
    if not _is_voice_stem(stem):
        raise InvalidVoiceId(f"invalid voice id {voice_id!r}: use 1-100 letters, digits, '.', '_' or '-', "
                           "starting with a letter or digit")
    return stem + VOICE_SUFFIX


def _tensor(section: dict, key: str, where: str, *, floating: bool, ndim: int) -> torch.Tensor:
    value = section.get(key)
    if not isinstance(value, torch.Tensor):
        raise InvalidVoice(f"{where}.{key} must be a tensor, found {type(value).__name__}")
    if value.is_floating_point() != floating:
        raise InvalidVoice(f"{where}.{key} must be {'floating point' if floating else 'integer'}, "
                           f"found {value.dtype}")
    if value.dim() != ndim:
        raise InvalidVoice(f"{where}.{key} must have {ndim} dimensions, found shape {tuple(value.shape)}")
    if floating and not torch.isfinite(value).all():
        raise InvalidVoice(f"{where}.{key} holds NaN or infinite values")
    return value


def validate_voice_data(data: object, variant: Variant) -> None:
    """Raises InvalidVoice naming the first thing in `data` that the variant cannot use."""
    if not isinstance(data, dict) or set(data) != {"t3", "gen"}:
        raise InvalidVoice("a voice must be a dict with exactly the keys 't3' and 'gen'")
    t3, gen = data["t3"], data["gen"]
    if not isinstance(t3, dict) or not isinstance(gen, dict):
        raise InvalidVoice("'t3' and 'gen' must be dicts")
    if unknown := set(t3) - T3_KEYS:
        raise InvalidVoice(f"unknown keys in t3: {sorted(unknown)}")
    if unknown := set(gen) - GEN_KEYS:
        raise InvalidVoice(f"unknown keys in gen: {sorted(unknown)}")

    spk = _tensor(t3, "speaker_emb", "t3", floating=True, ndim=2)
    if tuple(spk.shape) != (1, SPEAKER_EMBED):
        raise InvalidVoice(f"t3.speaker_emb must have shape (1, {SPEAKER_EMBED}), found {tuple(spk.shape)}")
    prompt = _tensor(t3, "cond_prompt_speech_tokens", "t3", floating=False, ndim=2)
    limit = T3_PROMPT_LEN[variant.name]
    if prompt.shape[0] != 1 or not 1 <= prompt.shape[1] <= limit:
        raise InvalidVoice(f"t3.cond_prompt_speech_tokens must have shape (1, 1..{limit}), "
                           f"found {tuple(prompt.shape)}")
    if prompt.min() < 0 or prompt.max() >= SPEECH_VOCAB:
        raise InvalidVoice(f"t3.cond_prompt_speech_tokens must lie in [0, {SPEECH_VOCAB})")
    for key in ("clap_emb", "cond_prompt_speech_emb"):
        if t3.get(key) is not None:
            raise InvalidVoice(f"t3.{key} must be empty (it is computed by the model)")
    if variant is not TURBO:  # English and Multilingual condition on an exaggeration level
        emo = _tensor(t3, "emotion_adv", "t3", floating=True, ndim=3)
        if tuple(emo.shape) != (1, 1, 1):
            raise InvalidVoice(f"t3.emotion_adv must have shape (1, 1, 1), found {tuple(emo.shape)}")

    tokens = _tensor(gen, "prompt_token", "gen", floating=False, ndim=2)
    n = tokens.shape[1]
    if tokens.shape[0] != 1 or not 1 <= n <= MAX_PROMPT_TOKENS:
        raise InvalidVoice(f"gen.prompt_token must have shape (1, 1..{MAX_PROMPT_TOKENS}), "
                           f"found {tuple(tokens.shape)}")
    if tokens.min() < 0 or tokens.max() >= SPEECH_VOCAB:
        raise InvalidVoice(f"gen.prompt_token must lie in [0, {SPEECH_VOCAB})")
    lens = _tensor(gen, "prompt_token_len", "gen", floating=False, ndim=1)
    if lens.tolist() != [n]:
        raise InvalidVoice(f"gen.prompt_token_len must be [{n}], found {lens.tolist()}")
    feat = _tensor(gen, "prompt_feat", "gen", floating=True, ndim=3)
    if tuple(feat.shape) != (1, 2 * n, MELS):
        raise InvalidVoice(f"gen.prompt_feat must have shape (1, {2 * n}, {MELS}) for {n} prompt tokens, "
                           f"found {tuple(feat.shape)}")
    if gen.get("prompt_feat_len") is not None:
        raise InvalidVoice("gen.prompt_feat_len must be empty")
    xvec = _tensor(gen, "embedding", "gen", floating=True, ndim=2)
    if tuple(xvec.shape) != (1, XVECTOR):
        raise InvalidVoice(f"gen.embedding must have shape (1, {XVECTOR}), found {tuple(xvec.shape)}")


def load_voice_bytes(raw: bytes, variant: Variant):
    """Parses and validates a voice file's bytes; returns the library's `Conditionals` on the CPU."""
    from chatterbox.models.t3.modules.cond_enc import T3Cond
    from chatterbox.tts import Conditionals

    if len(raw) > MAX_VOICE_BYTES:
        raise PayloadTooLarge(f"voice file is {len(raw)} bytes; the limit is {MAX_VOICE_BYTES}")
    try:
        with warnings.catch_warnings():  # a foreign pickle protocol only warns; the refusal below decides
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            data = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # weights_only refused a global: a pickle with a payload
        raise InvalidVoice(f"not a voice file: it holds objects other than tensors ({exc})") from exc
    except Exception as exc:  # truncated, not a torch file, garbage: the parser fails in many ways
        raise InvalidVoice(f"not a voice file: {type(exc).__name__}: {str(exc)[:200]}") from exc
    validate_voice_data(data, variant)
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
            if not entry.name.endswith(VOICE_SUFFIX) or not _is_voice_stem(stem):
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
        load_voice_bytes(raw, self.library.variant)  # refuses anything that is not a loadable voice
        target = self.directory / name
        if target.exists() and not overwrite:
            raise VoiceExists(f"Voice '{name}' already exists; upload with overwrite=true to replace it.")
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(raw)
                handle.flush()
                os.fsync(handle.fileno())
            if overwrite:
                os.replace(tmp, target)
            else:
                try:
                    os.link(tmp, target)  # fails if the name was taken meanwhile, unlike a rename
                except FileExistsError:
                    raise VoiceExists(f"Voice '{name}' already exists; upload with overwrite=true to "
                                      "replace it.") from None
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        _fsync_dir(self.directory)
        self.library.cache.evict(target.stem)
        return name

    def delete(self, voice_id: str) -> str:
        name = voice_file_name(voice_id)
        try:
            (self.directory / name).unlink()
        except FileNotFoundError:
            raise VoiceNotFound(f"Voice '{voice_id}' not found.") from None
        _fsync_dir(self.directory)
        self.library.cache.evict(name[: -len(VOICE_SUFFIX)])
        return name


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
