"""Tokenizer files for random-weight checkpoints, built locally.

The real tokenizers come from the Hugging Face Hub with the weights. A random-weight checkpoint needs
files of the same format and vocabulary size, so that the library's own tokenizer classes load them and
every id fits the embedding tables: a character BPE with the special tokens `EnTokenizer` and
`MTLTokenizer` check for (704 and 2454 ids), and a byte-level GPT-2 BPE of 50276 ids that transformers'
`AutoTokenizer` loads for Turbo. Merges are learned from a short built-in text, then padded with
concatenations of existing tokens up to the exact size: the vocabulary is valid BPE, not English.
"""

from __future__ import annotations

import json
import string
import unicodedata
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

# A few sentences to learn realistic first merges from (common English letter pairs).
_CORPUS = """
The quick brown fox jumps over the lazy dog. Speech synthesis turns written text into spoken audio.
A voice is cloned from a few seconds of a speaker's recordings, then used to read any sentence aloud.
Streaming sends the first words while the rest of the sentence is still being generated on the GPU.
Hello there, this is a test of the text to speech system, and it should sound natural and clear.
"""

# chatterbox.models.tokenizers.tokenizer's special tokens; T3Config fixes [STOP]=0 and [START]=255.
_SPECIALS = {"[STOP]": 0, "[UNK]": 1, "[SPACE]": 2, "[PAD]": 3, "[SEP]": 4, "[CLS]": 5, "[MASK]": 6,
             "[START]": 255}
ENGLISH_VOCAB_SIZE = 704  # T3Config.english_only().text_tokens_dict_size
MULTILINGUAL_VOCAB_SIZE = 2454  # T3Config.multilingual().text_tokens_dict_size
TURBO_VOCAB_SIZE = 50276  # ChatterboxTurboTTS.from_local checks len(tokenizer) against this
# Languages of the multilingual model; MTLTokenizer prefixes text with "[<id>]".
MULTILINGUAL_LANGUAGES = ("ar", "da", "de", "el", "en", "es", "fi", "fr", "he", "hi", "it", "ja", "ko",
                          "ms", "nl", "no", "pl", "pt", "ru", "sv", "sw", "tr", "zh")
# Turbo's tokenizer is GPT-2's 50257 ids plus added tokens; these stand in for those (illustrative).
_TURBO_ADDED = tuple(f"[{tag}]" for tag in (
    "laugh", "chuckle", "sigh", "cough", "sniff", "groan", "gasp", "clear throat", "shush", "whisper",
    "cry", "scream", "yawn", "hum", "breath", "pause", "angry", "happy", "sad"))


def _learn_merges(words: Iterable[tuple[str, ...]], limit: int) -> list[tuple[str, str]]:
    """Plain BPE training: repeatedly merge the most frequent adjacent pair (ties broken by the pair)."""
    seqs = Counter(words)
    merges: list[tuple[str, str]] = []
    while len(merges) < limit:
        pairs: Counter = Counter()
        for seq, count in seqs.items():
            for pair in zip(seq, seq[1:], strict=False):  # adjacent pairs: one shorter by design
                pairs[pair] += count
        if not pairs:
            break
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]
        merges.append(best)
        merged: Counter = Counter()
        for seq, count in seqs.items():
            out, i = [], 0
            while i < len(seq):
                if i + 1 < len(seq) and (seq[i], seq[i + 1]) == best:
                    out.append(seq[i] + seq[i + 1])
                    i += 2
                else:
                    out.append(seq[i])
                    i += 1
            merged[tuple(out)] += count
        seqs = merged
    return merges


def _fill(tokens: list[str], merges: list[tuple[str, str]], size: int) -> None:
    """Append merges of existing token pairs until `tokens` has `size` entries (in place)."""
    known = set(tokens)
    base = list(tokens)
    for a in base:
        for b in base:
            if len(tokens) >= size:
                return
            if a + b not in known:
                merges.append((a, b))
                tokens.append(a + b)
                known.add(a + b)
    raise ValueError(f"cannot grow a vocabulary of {len(base)} tokens to {size}")


def _char_bpe_json(alphabet: list[str], words: list[tuple[str, ...]], size: int,
                   added: tuple[str, ...] = ()) -> str:
    """A tokenizers JSON for a character BPE with the Chatterbox special ids and `size` entries."""
    from tokenizers import AddedToken, Tokenizer
    from tokenizers.models import BPE

    specials = dict(_SPECIALS)
    for token in added:  # language tags take the ids right after the specials
        specials[token] = len(specials) - 1
    slots = [None] * size
    for token, idx in specials.items():
        slots[idx] = token
    tokens = [t for t in dict.fromkeys(alphabet) if t not in specials]
    free = size - len(specials)
    merges = _learn_merges(words, limit=free - len(tokens))
    tokens += [a + b for a, b in merges]
    _fill(tokens, merges, free)
    it = iter(tokens)
    vocab = {(slots[i] if slots[i] is not None else next(it)): i for i in range(size)}
    tok = Tokenizer(BPE(vocab=vocab, merges=merges, unk_token="[UNK]"))
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    return tok.to_str(pretty=False)


def _words(text: str) -> list[tuple[str, ...]]:
    return [tuple(w) for w in text.split()]


def write_english_tokenizer(path: Path) -> None:
    alphabet = list(string.ascii_letters + string.digits + string.punctuation)
    Path(path).write_text(_char_bpe_json(alphabet, _words(_CORPUS), ENGLISH_VOCAB_SIZE))


def write_multilingual_tokenizer(path: Path) -> None:
    # MTLTokenizer lowercases and NFKD-normalises, so the alphabet is lowercase plus combining marks.
    alphabet = list(string.ascii_lowercase + string.digits + string.punctuation)
    alphabet += [chr(c) for c in range(0x300, 0x370)]  # combining diacritics left by NFKD
    text = unicodedata.normalize("NFKD", _CORPUS.lower())
    tags = tuple(f"[{lang}]" for lang in MULTILINGUAL_LANGUAGES)
    Path(path).write_text(_char_bpe_json(alphabet, _words(text), MULTILINGUAL_VOCAB_SIZE, tags))


def write_gpt2_tokenizer(directory: Path) -> None:
    """A byte-level BPE with GPT-2's layout (50257 ids, <|endoftext|> last) plus added tokens."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE
    from transformers import GPT2TokenizerFast

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokens = sorted(pre_tokenizers.ByteLevel.alphabet())
    words = [tuple(piece) for piece, _ in byte_level.pre_tokenize_str(_CORPUS)]
    merges = _learn_merges(words, limit=2000)
    tokens += [a + b for a, b in merges]
    _fill(tokens, merges, TURBO_VOCAB_SIZE - len(_TURBO_ADDED) - 1)
    vocab = {t: i for i, t in enumerate(tokens)}
    vocab["<|endoftext|>"] = len(vocab)
    tok = Tokenizer(BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    fast = GPT2TokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                             unk_token="<|endoftext|>")
    fast.add_tokens(list(_TURBO_ADDED))
    assert len(fast) == TURBO_VOCAB_SIZE, len(fast)
    fast.save_pretrained(str(directory))
    # save_pretrained writes the fast tokenizer.json; the slow files make the layout complete.
    (Path(directory) / "vocab.json").write_text(json.dumps(vocab))
    with open(Path(directory) / "merges.txt", "w") as f:
        f.write("#version: 0.2\n")
        f.writelines(f"{a} {b}\n" for a, b in merges)
