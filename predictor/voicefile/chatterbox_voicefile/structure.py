"""What a voice must hold for each Chatterbox variant: keys, dtypes, shapes, token ranges, finite values.

A voice is `{"t3": T3Cond's fields, "gen": S3Gen's reference dict}` as `Conditionals.save` writes it.
The check names the first thing a variant cannot use, so a user sees which field of which file is wrong.
"""

from __future__ import annotations

from .pth import InvalidVoiceFile, TensorData, read_pth

SPEECH_VOCAB = 6561  # S3 speech tokens; ids above are T3's start/stop tokens, never in a prompt
SPEAKER_EMBED = 256  # VoiceEncoder embedding (T3's speaker conditioning)
XVECTOR = 192  # CAMPPlus x-vector (S3Gen's speaker embedding)
MELS = 80
# S3Gen's reference is cut to 10 s (25 tokens/s); T3's prompt to 150 (English) or 375 (Turbo) tokens.
MAX_PROMPT_TOKENS = 250
T3_PROMPT_LEN = {"turbo": 375, "english": 150, "multilingual": 150}
VARIANTS = tuple(T3_PROMPT_LEN)

T3_KEYS = {"speaker_emb", "clap_emb", "cond_prompt_speech_tokens", "cond_prompt_speech_emb", "emotion_adv"}
GEN_KEYS = {"prompt_token", "prompt_token_len", "prompt_feat", "prompt_feat_len", "embedding"}


def _tensor(section: dict, key: str, where: str, *, floating: bool, ndim: int) -> TensorData:
    value = section.get(key)
    if not isinstance(value, TensorData):
        raise InvalidVoiceFile(f"{where}.{key} must be a tensor, found {type(value).__name__}")
    if value.floating != floating:
        raise InvalidVoiceFile(f"{where}.{key} must be {'floating point' if floating else 'integer'}, "
                               f"found {value.dtype}")
    if value.ndim != ndim:
        raise InvalidVoiceFile(f"{where}.{key} must have {ndim} dimensions, found shape {value.shape}")
    if floating and not value.all_finite():
        raise InvalidVoiceFile(f"{where}.{key} holds NaN or infinite values")
    return value


def _tokens(section: dict, key: str, where: str, limit: int) -> TensorData:
    tokens = _tensor(section, key, where, floating=False, ndim=2)
    if tokens.shape[0] != 1 or not 1 <= tokens.shape[1] <= limit:
        raise InvalidVoiceFile(f"{where}.{key} must have shape (1, 1..{limit}), found {tokens.shape}")
    if min(tokens.values) < 0 or max(tokens.values) >= SPEECH_VOCAB:
        raise InvalidVoiceFile(f"{where}.{key} must lie in [0, {SPEECH_VOCAB})")
    return tokens


def _shaped(section: dict, key: str, where: str, shape: tuple[int, ...]) -> TensorData:
    value = _tensor(section, key, where, floating=True, ndim=len(shape))
    if value.shape != shape:
        raise InvalidVoiceFile(f"{where}.{key} must have shape {shape}, found {value.shape}")
    return value


def check_voice(data: object, variant: str) -> None:
    """Raises InvalidVoiceFile naming the first thing in `data` (from read_pth) that `variant` cannot use."""
    if variant not in T3_PROMPT_LEN:
        raise ValueError(f"unknown variant {variant!r}; one of {VARIANTS}")
    if not isinstance(data, dict) or set(data) != {"t3", "gen"}:
        raise InvalidVoiceFile("a voice must be a dict with exactly the keys 't3' and 'gen'")
    t3, gen = data["t3"], data["gen"]
    if not isinstance(t3, dict) or not isinstance(gen, dict):
        raise InvalidVoiceFile("'t3' and 'gen' must be dicts")
    if unknown := set(t3) - T3_KEYS:
        raise InvalidVoiceFile(f"unknown keys in t3: {sorted(unknown)}")
    if unknown := set(gen) - GEN_KEYS:
        raise InvalidVoiceFile(f"unknown keys in gen: {sorted(unknown)}")

    _shaped(t3, "speaker_emb", "t3", (1, SPEAKER_EMBED))
    try:
        _tokens(t3, "cond_prompt_speech_tokens", "t3", T3_PROMPT_LEN[variant])
    except InvalidVoiceFile as exc:
        prompt = t3.get("cond_prompt_speech_tokens")
        longest = max(T3_PROMPT_LEN.values())
        if isinstance(prompt, TensorData) and prompt.ndim == 2 and T3_PROMPT_LEN[variant] < prompt.shape[1] \
                <= longest:
            made_for = [name for name, n in T3_PROMPT_LEN.items() if n >= prompt.shape[1]]
            raise InvalidVoiceFile(f"{exc}: a voice made for {' or '.join(made_for)}, whose prompts are "
                                   f"longer than {variant}'s; clone it again for {variant}") from None
        raise
    for key in ("clap_emb", "cond_prompt_speech_emb"):
        if t3.get(key) is not None:
            raise InvalidVoiceFile(f"t3.{key} must be empty (it is computed by the model)")
    if variant != "turbo":  # English and Multilingual condition on an exaggeration level
        _shaped(t3, "emotion_adv", "t3", (1, 1, 1))

    n = _tokens(gen, "prompt_token", "gen", MAX_PROMPT_TOKENS).shape[1]
    lens = _tensor(gen, "prompt_token_len", "gen", floating=False, ndim=1)
    if list(lens.values) != [n]:
        raise InvalidVoiceFile(f"gen.prompt_token_len must be [{n}], found {list(lens.values)}")
    feat = _tensor(gen, "prompt_feat", "gen", floating=True, ndim=3)
    if feat.shape != (1, 2 * n, MELS):
        raise InvalidVoiceFile(f"gen.prompt_feat must have shape (1, {2 * n}, {MELS}) for {n} prompt "
                               f"tokens, found {feat.shape}")
    if gen.get("prompt_feat_len") is not None:
        raise InvalidVoiceFile("gen.prompt_feat_len must be empty")
    _shaped(gen, "embedding", "gen", (1, XVECTOR))


def read_voice(raw: bytes, variant: str) -> dict:
    """Reads (without torch, weights only) and checks a voice file's bytes; returns its data."""
    data = read_pth(raw)
    check_voice(data, variant)
    return data
