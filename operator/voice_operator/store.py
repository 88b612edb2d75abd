"""The voice directory as the operator sees it: voice files, and which Voice resource owns each id.

Voice ids are file names, so two Voice resources naming one id would overwrite each other's file. The
first to sync claims the id with a claim file (its format is chatterbox_voicefile.claims, because the
predictors read claims too), created by an atomic hard link, so two operator workers racing for one id
cannot both win, and the claim survives an operator restart. A claim whose owner no longer exists is
stale and may be taken over.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from chatterbox_voicefile import voice_file_name
from chatterbox_voicefile.claims import Owner, claim_path, read_claim, remove_claim, write_claim
from chatterbox_voicefile.files import fsync_dir, write_atomic


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

    # -- claims ------------------------------------------------------------------------------------
    def owner(self, voice_id: str) -> Owner | None:
        """The claim's owner; None when unclaimed or unreadable (no owner can be proven: stale)."""
        return read_claim(self.directory, voice_id)

    def claim(self, voice_id: str, owner: Owner, *, replace_stale: Owner | None = None) -> Owner:
        """Claims `voice_id` for `owner`; returns whoever holds it afterwards (owner when it won).

        `replace_stale` is the holder the caller found to no longer exist: its claim is overwritten.
        """
        current = self.owner(voice_id)
        if current == owner:
            return owner
        if current is not None and current != replace_stale:
            return current
        try:
            # An unreadable claim (current None, file present) is stale too, so it is overwritten.
            write_claim(self.directory, voice_id, owner,
                        overwrite=current is not None or claim_path(self.directory, voice_id).exists())
        except FileExistsError:  # another worker claimed it between our read and our link
            return self.owner(voice_id) or owner
        return owner

    def release(self, voice_id: str, owner: Owner) -> None:
        if self.owner(voice_id) == owner:
            remove_claim(self.directory, voice_id)

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
