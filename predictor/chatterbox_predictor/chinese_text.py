"""The multilingual tokenizer's Chinese step, built when the first Chinese text arrives instead of at load.

chatterbox-tts 0.1.7's `MTLTokenizer` builds a `ChineseCangjieConverter` in its constructor, and that
converter fetches its Cangjie table from the Hugging Face Hub and builds a `spacy_pkuseg` segmenter,
which downloads its model from GitHub on first use. Offline (air-gapped clusters, CI, this project's
machines) the segmenter's download fails and takes the whole model load down with it, although only
Chinese needs either. `deferred_chinese_converter` puts `LazyCangjieConverter` in the library's place
while the model loads: every other language works offline, and Chinese text that cannot be converted
fails with `LanguageUnavailable` instead of being tokenized as raw characters.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

from .errors import LanguageUnavailable

log = logging.getLogger(__name__)


class LazyCangjieConverter:
    """Stands in for the library's `ChineseCangjieConverter(model_dir)`; builds it on the first call."""

    def __init__(self, model_dir=None, *, build=None):
        self._model_dir = model_dir
        self._build = build
        self._converter = None
        self._lock = threading.Lock()  # the engine has one worker, but nothing stops another caller

    def __call__(self, text: str) -> str:
        return self.converter()(text)

    def converter(self):
        """The library's converter, built once; `LanguageUnavailable` when its data cannot be had."""
        with self._lock:
            if self._converter is None:
                self._converter = self._load()
            return self._converter

    def _load(self):
        if self._build is None:
            from chatterbox.models.tokenizers.tokenizer import ChineseCangjieConverter as build
        else:
            build = self._build
        try:
            converter = build(self._model_dir)
        except Exception as exc:  # pkuseg's download raises whatever urllib or its unpacking raise
            raise LanguageUnavailable(
                f"Chinese text needs the spacy_pkuseg segmenter model, which could not be loaded "
                f"({type(exc).__name__}: {exc}); put it in ~/.pkuseg or allow the download") from exc
        # The library only logs a warning when it cannot fetch its Cangjie table, then passes Chinese
        # characters through untranslated, which the grapheme vocabulary does not hold.
        if not converter.word2cj:
            raise LanguageUnavailable(
                "Chinese text needs the Cangjie table (Cangjie5_TC.json of ResembleAI/chatterbox), which "
                "could not be loaded from the Hugging Face Hub or its cache in the checkpoint directory")
        if converter.segmenter is None:
            log.warning("spacy_pkuseg is not installed: Chinese text is converted without segmentation")
        return converter


@contextlib.contextmanager
def deferred_chinese_converter() -> Iterator[None]:
    """While the block runs, `MTLTokenizer` gets a `LazyCangjieConverter` instead of building the
    library's converter (the name is looked up in the tokenizer module when the tokenizer is built)."""
    from chatterbox.models.tokenizers import tokenizer as module

    original = module.ChineseCangjieConverter
    module.ChineseCangjieConverter = lambda model_dir=None: LazyCangjieConverter(model_dir, build=original)
    try:
        yield
    finally:
        module.ChineseCangjieConverter = original
