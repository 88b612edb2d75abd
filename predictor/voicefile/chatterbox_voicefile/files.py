"""Files on the voice volume land whole or not at all, whoever writes them (predictor or operator).

A new file is written under a hidden temporary name in the same directory, flushed to disk, then put in
place by a rename (replace) or a hard link (create only: fails if the name is taken meanwhile, which a
rename would not), and the directory itself is flushed so the new name survives a crash. A reader sees
the old file or the new one, never half of one; the predictors' directory scan skips hidden names.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(target: Path, raw: bytes, *, overwrite: bool, mode: int | None = None) -> None:
    """Puts `raw` at `target`. Raises FileExistsError when `target` exists and `overwrite` is false.
    The file is private to its owner (mkstemp's 0600) unless `mode` says otherwise."""
    directory = target.parent
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(tmp, target)
        else:
            os.link(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    fsync_dir(directory)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
