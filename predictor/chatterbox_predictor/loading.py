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

from .chinese_text import deferred_chinese_converter
from .random_checkpoint import read_marker, registered_backbone
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


KSERVE_MODEL_DIR = Path("/mnt/models")  # where KServe's storage initializer puts the storageUri's files


def resolve_device(device: str) -> str:
    """'auto' becomes 'cuda' when a GPU is visible, else 'cpu'; 'cuda' without a GPU is an error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise CheckpointError("device 'cuda' was asked for, but torch sees no CUDA device")
    return device


def random_checkpoint_dir(cache_dir: Path, variant: Variant, size: str) -> Path:
    """A generated checkpoint under `cache_dir`, built on first use (atomically: built aside, renamed)."""
    import shutil
    import tempfile

    from .random_checkpoint import build_random_checkpoint

    target = Path(cache_dir) / "random" / f"{variant.name}-{size}"
    if (target / variant.builtin_voice).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build_random_checkpoint(work, variant, size)
        shutil.rmtree(target, ignore_errors=True)
        work.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def download_checkpoint(variant: Variant, cache_dir: Path) -> Path:
    """Downloads the variant's files from the Hugging Face Hub; a failure says how to go on."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(
            repo_id=variant.repo_id, cache_dir=str(Path(cache_dir) / "hub"),
            allow_patterns=[*variant.required_files, variant.builtin_voice]))
    except Exception as exc:  # the hub client raises many unrelated types for "offline"
        raise CheckpointError(
            f"no checkpoint directory was given and {variant.repo_id} could not be downloaded from the "
            f"Hugging Face Hub ({type(exc).__name__}: {exc}). Either put the variant's files "
            f"({', '.join(variant.required_files)}) in a directory and pass --checkpoint_dir DIR "
            f"(CHATTERBOX_CHECKPOINT_DIR), or try the server without real weights with "
            f"--random_weights small (CHATTERBOX_RANDOM_WEIGHTS=small; it speaks noise).") from exc


def resolve_checkpoint(settings) -> Path:
    """The checkpoint directory the settings ask for: random, explicit, KServe's mount, or a download."""
    variant = get_variant(settings.variant)
    if settings.random_weights:
        return random_checkpoint_dir(settings.model_cache_dir, variant, settings.random_weights)
    if settings.checkpoint_dir is not None:
        return settings.checkpoint_dir
    if KSERVE_MODEL_DIR.is_dir() and not variant.missing_files(KSERVE_MODEL_DIR):
        return KSERVE_MODEL_DIR
    return download_checkpoint(variant, settings.model_cache_dir)
