"""The three Chatterbox variants and the checkpoint layout each one's `from_local` reads.

This is the one place that knows which files make a checkpoint directory (KServe mounts it at
/mnt/models), which Hugging Face repository holds them, and which transformer backbone the variant's T3
is built on. The loader, the random-checkpoint builder and the tests all read it from here, so the
layout a test builds is the layout production loads.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Variant:
    """A Chatterbox model family as chatterbox-tts 0.1.7 ships it."""

    name: str
    """Our name for it: turbo, english or multilingual."""
    repo_id: str
    """Hugging Face repository the library's from_pretrained downloads."""
    class_path: str
    """module:Class of the library's model class (its from_local reads the directory)."""
    backbone: str
    """Key in chatterbox's LLAMA_CONFIGS of the transformer that T3 builds on."""
    t3_weights: str
    s3gen_weights: str
    ve_weights: str
    tokenizer_files: tuple[str, ...]
    """Tokenizer files in the directory (Turbo's are read by transformers' AutoTokenizer)."""
    builtin_voice: str = "conds.pt"
    """The checkpoint's default voice, a saved Conditionals; optional in the directory."""

    @property
    def required_files(self) -> tuple[str, ...]:
        return (self.ve_weights, self.t3_weights, self.s3gen_weights, *self.tokenizer_files)

    def missing_files(self, directory: Path) -> list[str]:
        return [name for name in self.required_files if not (Path(directory) / name).is_file()]

    def model_class(self):
        """The library class, imported on first use: importing chatterbox pulls in torch."""
        module, _, cls = self.class_path.partition(":")
        return getattr(importlib.import_module(module), cls)


TURBO = Variant(
    name="turbo",
    repo_id="ResembleAI/chatterbox-turbo",
    class_path="chatterbox.tts_turbo:ChatterboxTurboTTS",
    backbone="GPT2_medium",
    t3_weights="t3_turbo_v1.safetensors",
    s3gen_weights="s3gen_meanflow.safetensors",
    ve_weights="ve.safetensors",
    # What GPT2TokenizerFast.save_pretrained writes and AutoTokenizer.from_pretrained reads back.
    tokenizer_files=("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"),
)

ENGLISH = Variant(
    name="english",
    repo_id="ResembleAI/chatterbox",
    class_path="chatterbox.tts:ChatterboxTTS",
    backbone="Llama_520M",
    t3_weights="t3_cfg.safetensors",
    s3gen_weights="s3gen.safetensors",
    ve_weights="ve.safetensors",
    tokenizer_files=("tokenizer.json",),
)

MULTILINGUAL = Variant(
    name="multilingual",
    repo_id="ResembleAI/chatterbox",
    class_path="chatterbox.mtl_tts:ChatterboxMultilingualTTS",
    backbone="Llama_520M",
    t3_weights="t3_mtl23ls_v2.safetensors",
    # The multilingual from_local reads torch-pickled state dicts (with weights_only=True), not safetensors.
    s3gen_weights="s3gen.pt",
    ve_weights="ve.pt",
    tokenizer_files=("grapheme_mtl_merged_expanded_v1.json",),
)

VARIANTS: dict[str, Variant] = {v.name: v for v in (TURBO, ENGLISH, MULTILINGUAL)}


def get_variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown variant {name!r}; choose one of {', '.join(VARIANTS)}") from None
