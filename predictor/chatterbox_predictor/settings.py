"""The predictor's settings: one typed object, filled from flags, then environment variables, then defaults.

Each field maps one to one onto a command-line flag (`--checkpoint_dir`, underscores like KServe's own
flags) and an environment variable (`CHATTERBOX_CHECKPOINT_DIR`); the Helm chart sets the variables.
KServe's own flags (`--model_name`, `--http_port`, ...) stay KServe's: the predictor's parser extends
KServe's parser instead of copying it. Nothing here imports kserve or torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .random_checkpoint import SIZES
from .variants import VARIANTS

ENV_PREFIX = "CHATTERBOX_"


def _optional_path(raw: str) -> Path | None:
    return Path(raw) if raw else None


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        raise ValueError(f"{raw!r} is not a boolean (true/false)")
    return value in ("1", "true", "yes", "on")


def _positive(kind):
    def parse(raw: str):
        value = kind(raw)
        if value <= 0:
            raise ValueError(f"{raw!r} must be > 0")
        return value
    return parse


def _setting(default, help: str, choices=None, parse=str):
    """A field with its flag's help text, allowed values and the parser of its flag/variable string."""
    return field(default=default, metadata={"help": help, "choices": choices, "parse": parse})


@dataclass(frozen=True)
class PredictorSettings:
    variant: str = _setting("turbo", "Chatterbox variant to serve.", choices=tuple(VARIANTS))
    checkpoint_dir: Path | None = _setting(
        None, "Checkpoint directory holding the variant's files (KServe's storage initializer puts them "
              "in /mnt/models, used when it exists). Empty: download the variant from the Hugging Face "
              "Hub at start-up.", parse=_optional_path)
    model_cache_dir: Path = _setting(
        Path.home() / ".cache" / "chatterbox-predictor",
        "Where downloaded and generated checkpoints are kept between runs.", parse=Path)
    random_weights: str = _setting(
        "", "Offline mode: serve a generated checkpoint of the real architecture with RANDOM weights "
            "(it speaks noise) at this size instead of real weights. For trying the server without "
            "access to the weights.", choices=("",) + SIZES)
    device: str = _setting("auto", "Device for inference: auto picks CUDA when present.",
                           choices=("auto", "cuda", "cpu"))
    dtype: str = _setting("float32", "Dtype of the T3 transformer on CUDA (the CPU always uses float32).",
                          choices=("float32", "bfloat16", "float16"))
    voices_dir: Path = _setting(Path("/voices"), "Directory of voice files (<voice_id>.pth): the volume the "
                                "operator and uploads write to.", parse=Path)
    voice_scan_interval: float = _setting(2.0, "Seconds between scans of the voice directory for files "
                                          "added, replaced or removed by others.", parse=_positive(float))
    voice_cache_mb: int = _setting(256, "Loaded voices kept on the device, in MiB (least recently used "
                                   "go first).", parse=_positive(int))
    api_keys: str = _setting("", "Comma-separated API keys accepted in X-API-Key or Authorization: Bearer. "
                             "With no key at all (here or in the file) the API is open.")
    api_keys_file: Path | None = _setting(None, "File with one API key per line (a mounted Secret); "
                                          "re-read when it changes.", parse=_optional_path)
    queue_size: int = _setting(16, "Requests allowed to wait for the model; beyond it the server answers "
                               "503 with Retry-After.", parse=_positive(int))
    max_text_chars: int = _setting(5000, "Longest text accepted per request.", parse=_positive(int))
    token_cap: int = _setting(1000, "Most speech tokens generated per sentence group (25 tokens = 1 s); "
                              "requests may ask for fewer.", parse=_positive(int))
    watermark: bool = _setting(True, "Perth watermark on generated audio (Resemble AI's responsible-AI "
                               "default).", parse=_bool)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Adds one flag per field; an absent flag leaves the environment or the default in force."""
        group = parser.add_argument_group("chatterbox predictor")
        for f in dataclasses.fields(cls):
            env = ENV_PREFIX + f.name.upper()
            group.add_argument(f"--{f.name}", default=None, choices=f.metadata["choices"],
                               help=f"{f.metadata['help']} Environment: {env}.")

    @classmethod
    def load(cls, args: argparse.Namespace | None = None,
             environ: Mapping[str, str] | None = None) -> PredictorSettings:
        environ = os.environ if environ is None else environ
        values = {}
        for f in dataclasses.fields(cls):
            raw = getattr(args, f.name, None) if args is not None else None
            if raw is None:
                raw = environ.get(ENV_PREFIX + f.name.upper())
            if raw is None:
                continue
            choices = f.metadata["choices"]
            if choices is not None and raw not in choices:
                raise ValueError(f"{ENV_PREFIX}{f.name.upper()}={raw!r}: choose one of {choices}")
            try:
                values[f.name] = f.metadata["parse"](raw)
            except ValueError as exc:
                raise ValueError(f"{ENV_PREFIX}{f.name.upper()}: {exc}") from None
        return cls(**values)
