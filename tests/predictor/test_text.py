"""Text pieces: normalised like the library, sentence-sized, never cut inside a word."""

from __future__ import annotations

import pytest

from chatterbox_predictor import text
from chatterbox_predictor.errors import InvalidInput, TextTooLong
from chatterbox_predictor.variants import TURBO


def test_short_sentences_are_joined_into_one_piece():
    assert text.split("Hi there. How are you? Fine!", max_chars=100) == ["Hi there. How are you? Fine!"]


def test_long_text_is_split_at_sentence_ends_first():
    sentences = [f"This is sentence number {i} of a long text." for i in range(20)]
    pieces = text.split(" ".join(sentences), max_chars=120)
    assert all(len(p) <= 120 for p in pieces)
    assert all(p.endswith(".") for p in pieces)
    assert " ".join(pieces) == " ".join(sentences)


def test_a_sentence_longer_than_a_piece_is_split_between_words():
    words = [f"word{i}" for i in range(200)]
    pieces = text.split(" ".join(words), max_chars=50)
    assert all(len(p) <= 50 for p in pieces)
    assert " ".join(pieces).split(" ") == words  # every word whole, in order


def test_clauses_are_preferred_over_arbitrary_word_breaks():
    sentence = "First clause is here, second clause follows it, and a third one ends the sentence."
    assert text.split(sentence, max_chars=50) == [
        "First clause is here, second clause follows it,", "and a third one ends the sentence."]


def test_only_a_single_over_long_word_is_cut():
    url = "x" * 130
    pieces = text.split(f"See {url} now.", max_chars=50)
    assert "".join(pieces).replace(" ", "") == f"See{url}now."
    assert all(len(p) <= 50 for p in pieces)


def test_prepare_applies_the_library_punctuation_normalisation():
    assert text.prepare("hello   world…  “quoted”", TURBO, 1000) == ['Hello world, "quoted".']


@pytest.mark.parametrize("bad", ["", "   \n\t "])
def test_empty_text_is_refused(bad):
    with pytest.raises(InvalidInput, match="empty"):
        text.prepare(bad, TURBO, 1000)


def test_text_over_the_limit_is_refused_with_the_numbers():
    with pytest.raises(TextTooLong, match="1001 characters; the limit is 1000"):
        text.prepare("a" * 1001, TURBO, 1000)


def test_text_arriving_in_pieces_is_cut_after_its_last_whole_sentence():
    assert text.complete_sentences("Hello there. And the") == ("Hello there. ", "And the")
    assert text.complete_sentences('He said "stop!" Then, wait; no') == ('He said "stop!" ', "Then, wait; no")
    assert text.complete_sentences("No end yet") == ("", "No end yet")
    assert text.complete_sentences("Done.") == ("", "Done.")  # a full stop may still be "3.5": wait
