"""Regenerates requirements/constraints.txt from the packages installed in .venv.

Usage (after changing a dependency in a pyproject.toml):
    python3 -m venv /tmp/lockenv \
        && /tmp/lockenv/bin/pip install -e ./predictor/common -e ./predictor/voicefile \
            -e ./predictor[test] -e ./operator \
        && /tmp/lockenv/bin/pip install --no-deps chatterbox-tts==0.1.7 \
        && /tmp/lockenv/bin/python hack/lock.py
The comment lines written above a pin are carried over to the new file, so every reason for a
non-obvious pin survives a regeneration; a pin whose package disappeared takes its comment with it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

LOCK = Path(__file__).resolve().parents[1] / "requirements" / "constraints.txt"
HEADER = """\
# The exact package set of the predictor and operator environments (`make install` passes it to pip
# as constraints). Regenerate with hack/lock.py; the comment above a pin says why it is not simply the
# newest release, and is carried over by the script.
"""
SKIP = {"pip"}  # pip's own version is set by the Makefile


def _name(line: str) -> str:
    return re.split(r"[=<>!~ ]", line, maxsplit=1)[0].lower().replace("_", "-")


def existing_comments() -> dict[str, list[str]]:
    comments: dict[str, list[str]] = {}
    pending: list[str] = []
    if not LOCK.exists():
        return comments
    body = LOCK.read_text().split(HEADER, 1)[-1]
    for line in body.splitlines():
        if line.startswith("#"):
            pending.append(line)
        elif line.strip():
            comments[_name(line)] = pending
            pending = []
    return comments


def main() -> None:
    frozen = subprocess.run([sys.executable, "-m", "pip", "freeze", "--all", "--exclude-editable"],
                            capture_output=True, text=True, check=True).stdout.splitlines()
    comments = existing_comments()
    lines = [HEADER]
    for pin in sorted(frozen, key=_name):
        if _name(pin) in SKIP:
            continue
        lines.extend(comments.get(_name(pin), []))
        lines.append(pin)
    LOCK.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
