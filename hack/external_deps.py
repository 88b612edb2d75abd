"""Prints the third-party requirements of the given pyproject.toml files, one per line, for the images'
dependency layer: our own chatterbox-* packages are installed later, from source, in a layer of their
own, so that a change to our code does not reinstall torch."""

import sys

import tomllib

OURS = "chatterbox-"  # chatterbox-common, chatterbox-voicefile (chatterbox-tts is installed with --no-deps)

for path in sys.argv[1:]:
    with open(path, "rb") as f:
        for requirement in tomllib.load(f)["project"]["dependencies"]:
            if not requirement.startswith(OURS):
                print(requirement)
