#!/usr/bin/env python3
"""The plan's invocation of the voice-cloning tool, as written:

    python scripts/clone_voice.py --input_dir /path/to/audio/samples --output_voice_id new_voice_name

It is the predictor package's `chatterbox-clone-voice` (chatterbox_predictor/cloning/cli.py); run it
with the Python of the predictor's environment (`make install` makes .venv).
"""

import sys

from chatterbox_predictor.cloning.cli import main

if __name__ == "__main__":
    sys.exit(main())
