"""Random-weight Chatterbox checkpoints of the real architecture, in the exact file layout.

No machine this project is built on can reach the Hugging Face Hub, so tests, the benchmark and the
offline mode of `make run` build a checkpoint directory here: every module the library constructs, with
random weights, saved under the file names the variant's `from_local` reads (see `variants`), plus
locally built tokenizer files and a built-in voice (`conds.pt`) made by the library's own
`prepare_conditionals` from a synthetic reference clip. Production loads real weights through the same
`from_local` call.

Two sizes:
- `full`: the real shapes (proves the real weights' shapes load; a Turbo T3 step is ~0.1 s on a CPU).
- `small`: the same modules with a shallow transformer backbone (deep enough for the multilingual
  alignment heads). The library builds T3 from the named
  entry of `LLAMA_CONFIGS`, so a small checkpoint is loaded while a reduced configuration is registered
  under that name (`registered_backbone`). The directory records its size in `random-weights.json`, and
  `loading.load_model` registers the reduced configuration itself when it finds that file.

Random weights never emit end-of-speech: whoever generates from such a checkpoint caps the speech tokens.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
from collections.abc import Iterator
from pathlib import Path

from .variants import ENGLISH, MULTILINGUAL, TURBO, Variant, get_variant

log = logging.getLogger(__name__)

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
REFERENCE_SECONDS = 8.0  # Turbo's prepare_conditionals refuses a reference of 5 s or less
REFERENCE_SAMPLE_RATE = 24_000


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


def synthetic_reference(seconds: float = REFERENCE_SECONDS, sr: int = REFERENCE_SAMPLE_RATE):
    """A deterministic voice-like clip: a gliding harmonic tone with syllable-rate amplitude and noise."""
    import numpy as np

    t = np.arange(int(seconds * sr)) / sr
    f0 = 140 + 25 * np.sin(2 * math.pi * 0.7 * t)  # a slowly gliding pitch
    phase = 2 * math.pi * np.cumsum(f0) / sr
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = 0.5 * (1 + np.sin(2 * math.pi * 4.0 * t)) ** 2  # ~4 syllables a second
    noise = np.random.default_rng(0).normal(0, 0.02, t.shape)
    wav = 0.3 * envelope * voiced / 2.6 + noise
    return wav.astype(np.float32)


def _save(module, path: Path) -> None:
    """Saves a state dict in the format the file name says (the multilingual layout mixes both)."""
    import torch
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)


def _t3(variant: Variant, size: str):
    from chatterbox.models.t3 import T3
    from chatterbox.models.t3.modules.t3_config import T3Config

    with registered_backbone(variant, size):
        if variant is TURBO:
            # The hyperparameters ChatterboxTurboTTS.from_local sets before building T3.
            hp = T3Config(text_tokens_dict_size=50276)
            hp.llama_config_name = variant.backbone
            hp.speech_tokens_dict_size = 6563
            hp.input_pos_emb = None
            hp.speech_cond_prompt_len = 375
            hp.use_perceiver_resampler = False
            hp.emotion_adv = False
            return T3(hp)
        if variant is MULTILINGUAL:
            return T3(T3Config.multilingual())
        return T3()


def build_random_checkpoint(directory: Path | str, variant: str | Variant = "turbo", size: str = "small",
                            seed: int = 0, builtin_voice: bool = True) -> Path:
    """Writes a random-weight checkpoint of `variant` at `size` into `directory` and returns it.

    The same seed gives the same weights. With `builtin_voice`, the library's `prepare_conditionals`
    runs on `synthetic_reference()` and its `Conditionals` are saved as `conds.pt`.
    """
    import soundfile
    import torch
    from chatterbox.models.s3gen import S3Gen
    from chatterbox.models.voice_encoder import VoiceEncoder

    from . import tokenizer_files

    variant = get_variant(variant) if isinstance(variant, str) else variant
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(seed)
    _save(VoiceEncoder(), directory / variant.ve_weights)
    _save(_t3(variant, size), directory / variant.t3_weights)
    _save(S3Gen(meanflow=variant is TURBO), directory / variant.s3gen_weights)
    if variant is TURBO:
        tokenizer_files.write_gpt2_tokenizer(directory)
    elif variant is ENGLISH:
        tokenizer_files.write_english_tokenizer(directory / "tokenizer.json")
    else:
        tokenizer_files.write_multilingual_tokenizer(directory / "grapheme_mtl_merged_expanded_v1.json")
    (directory / MARKER_FILE).write_text(json.dumps({
        "variant": variant.name, "size": size, "seed": seed,
        "note": "random weights: this checkpoint speaks noise",
    }, indent=2))

    if builtin_voice:
        from .loading import load_model

        model = load_model(directory, variant, device="cpu")
        reference = directory / "reference.wav"
        soundfile.write(reference, synthetic_reference(), REFERENCE_SAMPLE_RATE)
        model.prepare_conditionals(str(reference))
        model.conds.save(directory / variant.builtin_voice)
        reference.unlink()
    return directory
