"""Text preparation: the library's punctuation normalisation, then sentence-sized pieces.

Long input is spoken piece after piece, so the first audio comes after the first sentence's tokens, not
the whole text's, and T3 stays inside the lengths it was trained on. A piece never ends inside a word
unless a single "word" is itself longer than a piece may be (a URL, say), which is then cut.
"""

from __future__ import annotations

import re

from .errors import InvalidInput, TextTooLong
from .variants import Variant

MAX_PIECE_CHARS = 300  # about 20 s of speech: well inside T3's training lengths
_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"')\]]*\s+")
_CLAUSE_END = re.compile(r"(?<=[,;:])\s+")


def _pack(parts: list[str], limit: int, sep: str = " ") -> list[str]:
    """Greedily joins consecutive parts while the result stays within `limit` characters."""
    out: list[str] = []
    for part in parts:
        if out and len(out[-1]) + len(sep) + len(part) <= limit:
            out[-1] = out[-1] + sep + part
        else:
            out.append(part)
    return out


def _split_long(sentence: str, limit: int) -> list[str]:
    if len(sentence) <= limit:
        return [sentence]
    pieces: list[str] = []
    for clause in _pack(_CLAUSE_END.split(sentence), limit):
        if len(clause) <= limit:
            pieces.append(clause)
            continue
        words: list[str] = []
        for word in clause.split(" "):
            words.extend(word[i:i + limit] for i in range(0, len(word), limit))  # only an over-long word
        pieces.extend(_pack(words, limit))
    return pieces


def split(text: str, max_chars: int = MAX_PIECE_CHARS) -> list[str]:
    """Sentence-sized pieces of already collapsed text, short sentences joined up to `max_chars`."""
    sentences = [s for s in _SENTENCE_END.split(text.strip()) if s]
    pieces = [p for s in sentences for p in _split_long(s, max_chars)]
    return _pack(pieces, max_chars)


def complete_sentences(text: str) -> tuple[str, str]:
    """Splits text arriving in pieces (from an LLM, say) into the whole sentences so far and the rest."""
    cut = max((m.end() for m in _SENTENCE_END.finditer(text)), default=0)
    return text[:cut], text[cut:]


def prepare(text: str, variant: Variant, max_text_chars: int,
            max_piece_chars: int = MAX_PIECE_CHARS) -> list[str]:
    """Validated, normalised pieces ready for the tokenizer; typed errors for empty or huge text."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput("text is empty")
    if len(text) > max_text_chars:
        raise TextTooLong(f"text has {len(text)} characters; the limit is {max_text_chars}")
    return [variant.normalize(piece) for piece in split(" ".join(text.split()), max_piece_chars)]
