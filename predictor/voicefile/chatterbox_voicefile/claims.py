"""Claims: which Voice resource owns a voice id on the volume. The operator writes them; the predictor
reads them, so that a REST delete or overwrite of a voice the operator manages is refused instead of
being silently undone by the operator's next drift repair.

A claim is `<voices_dir>/.claims/<stem>.json` holding `{"namespace", "name", "uid"}` of the Voice.
The directory is hidden because the predictors' scan skips dot names. The file is named after the voice
file's stem, not the id as given: "a" and "a.pth" name one file and share a claim, while "a.pth.x" and
"a.json.x" name two files and must not.
Writes go through `write_atomic`, whose create-only mode is a hard link: of two writers racing for one
id, exactly one wins.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from .files import fsync_dir, write_atomic
from .names import voice_file_name

CLAIMS_DIR = ".claims"


@dataclass(frozen=True)
class Owner:
    """The Voice resource holding a claim. The uid tells a Voice apart from a later one of the same name."""

    namespace: str
    name: str
    uid: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def claim_path(directory: Path, voice_id: str) -> Path:
    """Where the claim on `voice_id` lives; raises InvalidVoiceId for an id that is no file name."""
    return Path(directory) / CLAIMS_DIR / (Path(voice_file_name(voice_id)).stem + ".json")


def read_claim(directory: Path, voice_id: str) -> Owner | None:
    """The claim's owner; None when there is no claim, and also when it cannot be read (a torn or
    hand-edited file proves no owner, so the operator may treat it as stale and take it over).
    Raises InvalidVoiceId for an id that is no file name."""
    try:
        data = json.loads(claim_path(directory, voice_id).read_text())
        return Owner(data["namespace"], data["name"], data["uid"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        return None


def write_claim(directory: Path, voice_id: str, owner: Owner, *, overwrite: bool) -> None:
    """Writes the claim whole. Raises FileExistsError when a claim exists and `overwrite` is false."""
    write_atomic(claim_path(directory, voice_id), json.dumps(asdict(owner)).encode(), overwrite=overwrite)


def remove_claim(directory: Path, voice_id: str) -> None:
    """Removes the claim if there is one."""
    path = claim_path(directory, voice_id)
    try:
        path.unlink()
    except FileNotFoundError:
        return
    fsync_dir(path.parent)
