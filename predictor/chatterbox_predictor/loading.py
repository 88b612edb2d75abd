"""Loads a Chatterbox model from a checkpoint directory through the library's own `from_local`.

Production (real weights under KServe's /mnt/models) and tests (random weights built by
`random_checkpoint`) take this same path. A directory that lacks a file the variant needs is refused
before the library is called, with the list of what is missing, instead of a bare FileNotFoundError
from deep inside the library.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from .backbones import read_marker, registered_backbone
from .chinese_text import deferred_chinese_converter
from .variants import MULTILINGUAL, Variant, get_variant

log = logging.getLogger(__name__)


class CheckpointError(Exception):
    """The checkpoint directory cannot be loaded as the requested variant (permanent)."""


def load_model(directory: Path | str, variant: str | Variant, device: str = "cpu"):
    """Returns the library's model object (ChatterboxTurboTTS, ChatterboxTTS, ...) loaded on `device`."""
    variant = get_variant(variant) if isinstance(variant, str) else variant
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory {directory} does not exist")
    registration = contextlib.nullcontext()
    marker = read_marker(directory)
    if marker is not None:
        if marker.get("variant") != variant.name:
            raise CheckpointError(
                f"{directory} holds a random {marker.get('variant')} checkpoint, not {variant.name}")
        log.warning("RANDOM WEIGHTS: %s is a generated %s %s checkpoint; it speaks noise, not speech",
                    directory, marker.get("size"), variant.name)
        registration = registered_backbone(variant, marker.get("size", "full"))
    missing = variant.missing_files(directory)
    if missing:
        raise CheckpointError(
            f"{directory} is not a Chatterbox {variant.name} checkpoint: missing {', '.join(missing)} "
            f"(the files of the Hugging Face repository {variant.repo_id})")
    # The multilingual tokenizer would build its Chinese segmenter (a download) even to speak French.
    deferred = deferred_chinese_converter() if variant is MULTILINGUAL else contextlib.nullcontext()
    with registration, deferred:
        return variant.model_class().from_local(directory, device)


def resolve_device(device: str) -> str:
    """'auto' becomes 'cuda' when a GPU is visible, else 'cpu'; 'cuda' without a GPU is an error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise CheckpointError("device 'cuda' was asked for, but torch sees no CUDA device")
    return device
