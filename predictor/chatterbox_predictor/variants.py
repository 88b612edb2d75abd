"""The three Chatterbox variants: the checkpoint layout each one's `from_local` reads, and how each speaks.

This is the one place that knows which files make a checkpoint directory (KServe mounts it at
/mnt/models), which Hugging Face repository holds them, and which transformer backbone the variant's T3
is built on. The loader, the random-checkpoint builder and the tests all read it from here, so the
layout a test builds is the layout production loads.

A variant also carries its behaviour (sampling defaults, guidance, stream plan, language needs, text
normalisation and tokenization), so the engine asks the variant instead of branching on its name.
Nothing here imports torch at import time.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from .sampling import ENGLISH_DEFAULTS, MULTILINGUAL_DEFAULTS, TURBO_DEFAULTS, SamplingParams
from .stream_plan import CFG_FLOW_PLAN, TURBO_PLAN, StreamPlan


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
    sampling_defaults: SamplingParams
    """What the library's generate() uses for every setting a request leaves out."""
    stream_plan: StreamPlan
    """Chunk sizes and S3Gen windows while streaming (see stream_plan.py)."""
    guided: bool
    """T3 samples the library's Llama way: classifier-free guidance over a batch of two, min-p, speech
    position embeddings and start/stop text tokens. False: Turbo's GPT-2 way, without any of them."""
    meanflow: bool
    """S3Gen is the 2-step meanflow decoder (Turbo) rather than the 10-step guided flow."""
    punc_norm: str
    """module:function of the library's punctuation normalisation for this variant."""
    needs_language: bool = False
    """Every request names a language id (the multilingual tokenizer is per language)."""
    alignment_control: bool = False
    """Sampling runs the library's alignment control (multilingual: forbids or forces end of speech)."""
    builtin_voice: str = "conds.pt"
    """The checkpoint's default voice, a saved Conditionals; optional in the directory."""

    @property
    def required_files(self) -> tuple[str, ...]:
        return (self.ve_weights, self.t3_weights, self.s3gen_weights, *self.tokenizer_files)

    def missing_files(self, directory: Path) -> list[str]:
        return [name for name in self.required_files if not (Path(directory) / name).is_file()]

    def normalize(self, text: str) -> str:
        """The library's punctuation clean-up for this variant, whitespace collapsed around it
        (punc_norm turns "…" into ", " even before a space)."""
        module, _, name = self.punc_norm.partition(":")
        punc_norm = getattr(importlib.import_module(module), name)
        return " ".join(punc_norm(" ".join(text.split())).split())

    def text_tokens(self, model, piece: str, language: str | None):
        """`piece` as the (1, n) tensor of text token ids that the variant's T3 reads, on the model's
        device: framed by start/stop text tokens for the guided variants, as their generate() does."""
        import torch.nn.functional as F

        tokenizer = model.tokenizer
        if not self.guided:
            return tokenizer(piece, return_tensors="pt").input_ids.to(model.device)
        if self.needs_language:
            ids = tokenizer.text_to_tokens(piece, language_id=language.lower())
        else:
            ids = tokenizer.text_to_tokens(piece)
        hp = model.t3.hp
        ids = F.pad(F.pad(ids, (1, 0), value=hp.start_text_token), (0, 1), value=hp.stop_text_token)
        return ids.to(model.device)

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
    sampling_defaults=TURBO_DEFAULTS,
    stream_plan=TURBO_PLAN,
    guided=False,
    meanflow=True,
    punc_norm="chatterbox.tts_turbo:punc_norm",
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
    sampling_defaults=ENGLISH_DEFAULTS,
    stream_plan=CFG_FLOW_PLAN,
    guided=True,
    meanflow=False,
    punc_norm="chatterbox.tts:punc_norm",
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
    sampling_defaults=MULTILINGUAL_DEFAULTS,
    stream_plan=CFG_FLOW_PLAN,
    guided=True,
    meanflow=False,
    punc_norm="chatterbox.mtl_tts:punc_norm",  # its own: CJK sentence enders too
    needs_language=True,
    alignment_control=True,
)

VARIANTS: dict[str, Variant] = {v.name: v for v in (TURBO, ENGLISH, MULTILINGUAL)}


def get_variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown variant {name!r}; choose one of {', '.join(VARIANTS)}") from None
