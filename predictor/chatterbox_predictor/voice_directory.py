"""The voice directory (the /voices volume) as the API sees it: listing, atomic uploads, deletion, the
operator's claims, and a watcher that notices what others changed.

Files land atomically (a hidden temporary file in the same directory, fsync, then a rename or a hard
link, so a reader sees the old file or the new one, never half of one), and a replaced or removed voice
leaves the cache at once. A voice id that a `Voice` resource manages (the voice operator's claim under
`.claims/`, format in `chatterbox_voicefile.claims`) is not the API's to replace or delete: the operator
would put its own file back, so such a request is a 409 that names the resource.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import chatterbox_voicefile as voicefile
from chatterbox_voicefile import VOICE_SUFFIX
from chatterbox_voicefile.files import fsync_dir, write_atomic

from .errors import InvalidVoiceId, VoiceExists, VoiceManaged, VoiceNotFound, VoiceStoreError
from .voices import VoiceLibrary, check_voice_bytes, voice_file_name

log = logging.getLogger(__name__)


def upload_file_name(filename: str) -> str:
    """An upload's file name as its voice file name: only `<voice_id>.pth` is one."""
    stem = filename[: -len(VOICE_SUFFIX)] if filename.endswith(VOICE_SUFFIX) else None
    if stem is None or not voicefile.is_voice_stem(stem):
        raise InvalidVoiceId(f"invalid voice file name {filename!r}: upload a file named <voice_id>.pth, "
                             "where voice_id is 1-100 letters, digits, '.', '_' or '-', starting with a "
                             "letter or digit (or pass ?voice_id=...)")
    return filename


@dataclass(frozen=True)
class ScanResult:
    voices: list[str]
    added: list[str]
    removed: list[str]
    changed: list[str]


class VoiceDirectory:
    """The voice files of the library's directory. `scan()` compares the directory with the previous
    scan; the watcher thread calls it every `scan_interval` seconds, the reload endpoint at once."""

    def __init__(self, library: VoiceLibrary, scan_interval: float = 2.0):
        self.library = library
        self.directory = library.directory
        self.scan_interval = scan_interval
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[int, int]] = {}
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    # -- watching ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Scans now, then on a timer in a thread of its own (the event loop never reads the volume)."""
        result = self.scan()
        log.info("voices in %s: %s", self.directory, result.voices)
        problem = self.writable_problem()
        if problem:
            log.warning("%s", problem)
        self._stop.clear()
        self._watcher = threading.Thread(target=self._watch, name="voice-watcher", daemon=True)
        self._watcher.start()

    def stop(self, wait: bool = True) -> None:
        """Ends the watcher; `wait` joins it (not on an event loop: a scan may be reading the volume)."""
        self._stop.set()
        if self._watcher is not None:
            if wait:
                self._watcher.join(timeout=10)
            self._watcher = None
            log.info("stopped watching %s", self.directory)

    def _watch(self) -> None:
        while not self._stop.wait(self.scan_interval):
            try:
                self.scan()
            except Exception:  # a flaky volume must not stop the watcher
                log.exception("scanning the voice directory failed")

    # -- reading -----------------------------------------------------------------------------------
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

    def _refuse_managed(self, name: str, how: str) -> None:
        try:
            owner = voicefile.read_claim(self.directory, name)
        except OSError as exc:  # a claim we cannot read may be a Voice resource's: do not touch the file
            raise VoiceManaged(f"Voice '{name}' has a claim that cannot be read ({exc}); refusing to "
                               "change it") from exc
        if owner is not None:
            raise VoiceManaged(
                f"Voice '{name}' is managed by the Voice resource {owner.name} in namespace "
                f"{owner.namespace}: {how} (the voice operator would undo a change made here).")

    # -- writing -----------------------------------------------------------------------------------
    def writable_problem(self) -> str | None:
        """Why this process cannot write voice files, or None: said once at start, so that a volume
        mounted with the wrong owner shows in the log before the first upload fails."""
        if not self.directory.is_dir():
            return f"the voice directory {self.directory} does not exist"
        if not os.access(self.directory, os.W_OK | os.X_OK):
            return (f"the voice directory {self.directory} is not writable by uid {os.getuid()}: uploads "
                    "and deletes will fail (give the volume to that user, or set fsGroup in Kubernetes)")
        return None

    def _store_error(self, exc: OSError) -> VoiceStoreError:
        return VoiceStoreError(f"the voice directory {self.directory} refused the change: "
                               f"{exc.strerror or exc}; it must be writable by uid {os.getuid()}")

    def check_writable(self, voice_id: str, overwrite: bool = False) -> Path:
        """The target of a save under `voice_id`, or the error that save would raise for the name alone
        (an invalid id, a managed voice, an existing one without `overwrite`): cloning asks first."""
        name = voice_file_name(voice_id)
        self._refuse_managed(name, "change its spec to replace the file")
        target = self.directory / name
        if target.exists() and not overwrite:
            raise VoiceExists(f"Voice '{name}' already exists; upload with overwrite=true to replace it.")
        return target

    def save(self, voice_id: str, raw: bytes, overwrite: bool = False) -> str:
        """Validates and stores a voice; returns its file name. Nothing is left behind on failure."""
        target = self.check_writable(voice_id, overwrite)
        name = target.name
        # Refuses anything that is not a loadable voice; the tensors are built when the voice is used.
        check_voice_bytes(raw, self.library.variant)
        try:
            write_atomic(target, raw, overwrite=overwrite)
        except FileExistsError:  # the name was taken between the check above and the link
            raise VoiceExists(f"Voice '{name}' already exists; upload with overwrite=true to "
                              "replace it.") from None
        except OSError as exc:
            raise self._store_error(exc) from exc
        self.library.cache.evict(target.stem)
        self._record(target.stem)
        return name

    def delete(self, voice_id: str) -> str:
        name = voice_file_name(voice_id)
        self._refuse_managed(name, "delete that resource to remove the file")
        try:
            (self.directory / name).unlink()
        except FileNotFoundError:
            raise VoiceNotFound(f"Voice '{voice_id}' not found.") from None
        except OSError as exc:
            raise self._store_error(exc) from exc
        fsync_dir(self.directory)
        self.library.cache.evict(name[: -len(VOICE_SUFFIX)])
        self._record(name[: -len(VOICE_SUFFIX)])
        return name

    def _record(self, voice_id: str) -> None:
        """Our own write goes into the last scan's picture, so that scans report only what others
        changed (a DELETE is not reported as removed again by the next reload)."""
        try:
            stat = (self.directory / voice_file_name(voice_id)).stat()
        except FileNotFoundError:
            stat = None
        with self._lock:
            if stat is None:
                self._seen.pop(voice_id, None)
            else:
                self._seen[voice_id] = (stat.st_size, stat.st_mtime_ns)
