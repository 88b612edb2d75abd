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
  `loading.load_model` registers the reduced configuration itself when it finds that file (the
  configurations and the marker live in `backbones`).

Random weights never emit end-of-speech: whoever generates from such a checkpoint caps the speech tokens.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
from pathlib import Path

from .backbones import MARKER_FILE, SIZES, registered_backbone
from .loading import load_model
from .variants import ENGLISH, MULTILINGUAL, TURBO, Variant, get_variant

log = logging.getLogger(__name__)

REFERENCE_SECONDS = 8.0  # Turbo's prepare_conditionals refuses a reference of 5 s or less
REFERENCE_SAMPLE_RATE = 24_000


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


def _voice_encoder():
    """The voice encoder, and the state it had before its LSTM weights were set to three times PyTorch's
    default scale: at the default, the last of its three layers' state forgets the input, and every
    recording gets the same embedding (cosine 0.9995 between speech and noise), where a trained encoder
    tells speakers apart. At 3x, embeddings of different voices lie 0.88-0.97 apart, so cloning's
    similarity figures measure something."""
    import copy

    import torch
    from chatterbox.models.voice_encoder import VoiceEncoder

    encoder = VoiceEncoder()
    default = copy.deepcopy(encoder.state_dict())
    with torch.no_grad():
        for name, weight in encoder.lstm.named_parameters():
            if name.startswith("weight"):
                weight.mul_(3.0)
    return encoder, default


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

    from . import tokenizer_files

    variant = get_variant(variant) if isinstance(variant, str) else variant
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(seed)
    encoder, default_encoder = _voice_encoder()
    _save(encoder, directory / variant.ve_weights)
    _save(_t3(variant, size), directory / variant.t3_weights)
    _save(S3Gen(meanflow=variant.meanflow), directory / variant.s3gen_weights)
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
        model = load_model(directory, variant, device="cpu")
        # The built-in voice keeps the speaker embedding of the default-scale encoder, as before the
        # encoder was rescaled: the tests' seeded token sequences (an end of speech forced within 12
        # tokens, the library's tokens drawn alike) were measured with it, and a random voice is as good
        # as another. Only voices cloned from this checkpoint see the rescaled encoder.
        model.ve.load_state_dict(default_encoder)
        reference = directory / "reference.wav"
        soundfile.write(reference, synthetic_reference(), REFERENCE_SAMPLE_RATE)
        model.prepare_conditionals(str(reference))
        model.conds.save(directory / variant.builtin_voice)
        reference.unlink()
    return directory


def random_checkpoint_dir(cache_dir: Path, variant: Variant, size: str) -> Path:
    """A generated checkpoint under `cache_dir`, built on first use (atomically: built aside, renamed)."""
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
