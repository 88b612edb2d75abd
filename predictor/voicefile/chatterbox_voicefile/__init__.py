"""The voice file format, shared by the predictor and the voice operator so both judge a file alike.

A voice is the library's `Conditionals` saved with `torch.save`. This package reads such a file without
torch (only tensors and plain containers may come out of its pickle) and checks its structure against
what a Chatterbox variant needs. It also owns the rule for voice ids, which become file names, and the
claim format through which the operator marks the voices a Voice resource manages.
"""

from .claims import Owner, read_claim
from .names import MAX_VOICE_BYTES, VOICE_SUFFIX, InvalidVoiceId, is_voice_stem, voice_file_name
from .pth import InvalidVoiceFile, TensorData, VoiceFileTooLarge, read_pth
from .structure import VARIANTS, check_voice, read_voice

__all__ = [
    "MAX_VOICE_BYTES", "VARIANTS", "VOICE_SUFFIX", "InvalidVoiceFile", "InvalidVoiceId", "Owner",
    "TensorData", "VoiceFileTooLarge", "check_voice", "is_voice_stem", "read_claim", "read_pth",
    "read_voice", "voice_file_name",
]
