"""The voice directory as the operator sees it: voice files, and which Voice resource owns each id.

Voice ids are file names, so two Voice resources naming one id would overwrite each other's file. The
first to sync claims the id with a small file under `.claims/` (hidden: the predictors' scan skips dot
names), created by an atomic hard link, so two operator workers racing for one id cannot both win, and
the claim survives an operator restart. A claim names the owner's namespace, name and uid; a claim whose
owner no longer exists is stale and may be taken over.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from chatterbox_voicefile import voice_file_name
from chatterbox_voicefile.files import fsync_dir, write_atomic

CLAIMS = ".claims"


@dataclass(frozen=True)
class Owner:
    namespace: str
    name: str
    uid: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class OnDisk:
    sha256: str
    size: int


def sha256_of(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


class VoiceStore:
    """Voice files and their claims in one directory. Methods are safe to call from handler threads."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def lock(self, voice_id: str) -> threading.Lock:
        """One lock per voice id: a drift repair and a spec change never write one file at once."""
        with self._guard:
            return self._locks.setdefault(voice_id, threading.Lock())

    def path(self, voice_id: str) -> Path:
        return self.directory / voice_file_name(voice_id)

    def _claim_path(self, voice_id: str) -> Path:
        # The file name's stem: "a.pth.x" and "a.json.x" must not share a claim.
        return self.directory / CLAIMS / (Path(voice_file_name(voice_id)).stem + ".json")

    # -- claims ------------------------------------------------------------------------------------
    def owner(self, voice_id: str) -> Owner | None:
        try:
            data = json.loads(self._claim_path(voice_id).read_text())
            return Owner(data["namespace"], data["name"], data["uid"])
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            return None  # unreadable: no owner can be proven, so the claim is stale

    def claim(self, voice_id: str, owner: Owner, *, replace_stale: Owner | None = None) -> Owner:
        """Claims `voice_id` for `owner`; returns whoever holds it afterwards (owner when it won).

        `replace_stale` is the holder the caller found to no longer exist: its claim is overwritten.
        """
        path = self._claim_path(voice_id)
        raw = json.dumps(vars(owner)).encode()
        current = self.owner(voice_id)
        if current == owner:
            return owner
        if current is not None and current != replace_stale:
            return current
        try:
            write_atomic(path, raw, overwrite=current is not None or path.exists())
        except FileExistsError:  # another worker claimed it between our read and our link
            return self.owner(voice_id) or owner
        return owner

    def release(self, voice_id: str, owner: Owner) -> None:
        if self.owner(voice_id) == owner:
            self._claim_path(voice_id).unlink(missing_ok=True)

    # -- files -------------------------------------------------------------------------------------
    def on_disk(self, voice_id: str) -> OnDisk | None:
        try:
            raw = self.path(voice_id).read_bytes()
        except FileNotFoundError:
            return None
        return OnDisk(sha256_of(raw), len(raw))

    def write(self, voice_id: str, raw: bytes) -> None:
        write_atomic(self.path(voice_id), raw, overwrite=True)

    def remove(self, voice_id: str) -> bool:
        """Removes the file; False when it was already gone (a deletion never waits on a missing file)."""
        try:
            os.unlink(self.path(voice_id))
        except FileNotFoundError:
            return False
        fsync_dir(self.directory)
        return True
