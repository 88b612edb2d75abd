"""What the Chatterbox predictor and the voice operator share beyond the voice file format.

`settings`: one declaration per setting becomes a flag, an environment variable and a help text, for
both programs alike. `keys`: the one reader of the API key file, which the predictor checks requests
against and the operator sends to the predictors.
"""

from .keys import read_key_file
from .settings import Settings, add_arguments, env_name, load_settings

__all__ = ["Settings", "add_arguments", "env_name", "load_settings", "read_key_file"]
