"""Which checkpoint directory the predictor serves: random, explicit, KServe's mount, the image's baked
copy, or a Hub download.

The policy sits above both the loader and the random-checkpoint builder, so neither imports the other's
caller.
"""

from __future__ import annotations

from pathlib import Path

from .loading import CheckpointError
from .random_checkpoint import random_checkpoint_dir
from .variants import Variant, get_variant

KSERVE_MODEL_DIR = Path("/mnt/models")  # where KServe's storage initializer puts the storageUri's files
# Where the predictor image bakes a checkpoint in (Dockerfile.predictor's CHECKPOINT_DIR build argument),
# for clusters that reach neither the Hub nor a storage URI. A mounted /mnt/models still wins over it.
BAKED_MODEL_DIR = Path("/opt/chatterbox/checkpoint")


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


def resolve_checkpoint(settings, model_dirs: tuple[Path, ...] = (KSERVE_MODEL_DIR, BAKED_MODEL_DIR)) -> Path:
    """The checkpoint directory the settings ask for: random, explicit, the first complete one of
    KServe's mount and the image's baked copy, else a download."""
    variant = get_variant(settings.variant)
    if settings.random_weights:
        return random_checkpoint_dir(settings.model_cache_dir, variant, settings.random_weights)
    if settings.checkpoint_dir is not None:
        return settings.checkpoint_dir
    for directory in model_dirs:
        if directory.is_dir() and not variant.missing_files(directory):
            return directory
    return download_checkpoint(variant, settings.model_cache_dir)
