"""The API key file: one key a line; blank lines and lines starting with '#' are ignored.

A mounted Kubernetes Secret holds it. The predictor accepts every key in it; the operator sends the
first one to the predictors. One reader, so that the two can never disagree about what a key is.
"""

from __future__ import annotations

from pathlib import Path


def read_key_file(path: Path) -> list[str]:
    """The keys in `path`, in file order, each stripped of surrounding whitespace (a Secret written
    with `echo` ends in a newline that is no part of the key). Raises OSError when it cannot be read."""
    keys = []
    for line in Path(path).read_text().splitlines():
        key = line.strip()
        if key and not key.startswith("#"):
            keys.append(key)
    return keys
