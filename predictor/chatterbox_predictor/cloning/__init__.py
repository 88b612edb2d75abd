"""Voice cloning: a speaker's recordings to a Chatterbox voice file, for the tool and the server alike.

recordings (decode, channels) -> segments (checks, voice activity, cuts, loudness) -> conditioning (the
voice's tensors) -> tuning (optional fit of the speaker embedding) -> pipeline (`clone`, the report);
cli is the command-line tool (`chatterbox-clone-voice`, `scripts/clone_voice.py`). Nothing here imports
torch at import time.
"""
