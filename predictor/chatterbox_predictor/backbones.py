"""Reduced transformer backbones for random-weight checkpoints, and the marker that says a checkpoint is one.

The loader (`loading`) needs this to load a small generated checkpoint through the library's unchanged
`from_local`, and the builder (`random_checkpoint`) needs it to build one; keeping it here lets the builder
use the loader without the two modules importing each other.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Iterator
from pathlib import Path

from .variants import MULTILINGUAL, Variant

MARKER_FILE = "random-weights.json"
"""Present only in generated checkpoints; says which variant and size they are."""

# Backbone depth of the small size: two blocks keep every code path (attention, KV cache, layer norms)
# while a step costs a fraction of the full 24 (GPT-2 medium) or 30 (Llama 520M) blocks. The width stays
# 1024: chatterbox's Perceiver resampler has 1024 hard-coded.
SMALL_LAYERS = 2
# Multilingual sampling watches attention heads in layers 9, 12 and 13 (`alignment.ALIGNMENT_HEADS`), so
# its small backbone keeps 14 blocks: the alignment control then runs, as with real weights.
SMALL_MULTILINGUAL_LAYERS = 14
SIZES = ("small", "full")


def backbone_config(variant: Variant, size: str) -> dict:
    """The transformer configuration of `variant`'s T3 at `size` (a copy, safe to modify)."""
    from chatterbox.models.t3.llama_configs import LLAMA_CONFIGS

    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")
    config = copy.deepcopy(LLAMA_CONFIGS[variant.backbone])
    if size == "small":
        key = "n_layer" if config.get("model_type") == "gpt2" else "num_hidden_layers"
        config[key] = SMALL_MULTILINGUAL_LAYERS if variant is MULTILINGUAL else SMALL_LAYERS
    return config


@contextlib.contextmanager
def registered_backbone(variant: Variant, size: str) -> Iterator[None]:
    """Registers `size`'s configuration under the variant's backbone name while the block runs.

    The library's constructors look the configuration up by a hard-coded name, so this is the one way to
    build (or load) a smaller T3 through the unchanged `from_local`. Not thread-safe: loading is serial.
    """
    from chatterbox.models.t3.llama_configs import LLAMA_CONFIGS

    original = LLAMA_CONFIGS[variant.backbone]
    LLAMA_CONFIGS[variant.backbone] = backbone_config(variant, size)
    try:
        yield
    finally:
        LLAMA_CONFIGS[variant.backbone] = original


def read_marker(directory: Path) -> dict | None:
    """The generated checkpoint's description, or None for a real checkpoint."""
    path = Path(directory) / MARKER_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())
