"""Voice ids: a voice id is the stem of a file in the voice directory, so it must never be a path."""

from __future__ import annotations

import re

VOICE_SUFFIX = ".pth"
# A real voice is ~0.2 MB (10 s of prompt); 16 MiB leaves room and stops a huge upload early.
MAX_VOICE_BYTES = 16 * 1024 * 1024
# Letters, digits, '.', '_', '-'; no path separators, no leading dot (temporary and hidden files start
# with one), 100 characters at most (well under any file system's 255-byte name limit).
VOICE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class InvalidVoiceId(ValueError):
    """A voice id that is not a plain file name stem."""


def is_voice_stem(stem: str) -> bool:
    return bool(VOICE_ID_RE.match(stem)) and ".." not in stem


def voice_file_name(voice_id: str) -> str:
    """`voice_id` with or without the .pth suffix -> the file name; anything path-like is refused."""
    stem = voice_id[: -len(VOICE_SUFFIX)] if voice_id.endswith(VOICE_SUFFIX) else voice_id
    if not is_voice_stem(stem):
        raise InvalidVoiceId(f"invalid voice id {voice_id!r}: use 1-100 letters, digits, '.', '_' or '-', "
                             "starting with a letter or digit")
    return stem + VOICE_SUFFIX
