"""Gopher quality rules (Rae et al. 2021, table A1), with datatrove's defaults and reason codes."""

from __future__ import annotations

import dataclasses

from data_pipelines.document import Document
from data_pipelines.filters.words import PUNCTUATION, TERMINAL_PUNCTUATION, split_words

_SYMBOLS = frozenset(PUNCTUATION) | TERMINAL_PUNCTUATION
STOP_WORDS = ('the', 'be', 'to', 'of', 'and', 'that', 'have', 'with')


@dataclasses.dataclass(frozen=True)
class GopherQualityFilter:
    """Each threshold is one rule; None switches it off (`datatrove...GopherQualityFilter`)."""

    min_doc_words: int | None = 50
    max_doc_words: int | None = 100_000
    min_avg_word_length: float | None = 3
    max_avg_word_length: float | None = 10
    max_symbol_word_ratio: float | None = 0.1
    max_bullet_lines_ratio: float | None = 0.9
    max_ellipsis_lines_ratio: float | None = 0.3
    max_non_alpha_words_ratio: float | None = 0.8  # minimum fraction of words with a letter
    min_stop_words: int | None = 2
    stop_words: tuple[str, ...] = STOP_WORDS

    def __call__(self, doc: Document) -> Document | str:
        text = doc.text
        words = split_words(text)
        n_words = len(words)
        # Symbol-only tokens are not words for the length rules, but do count in the ratios below.
        non_symbol = [w for w in words if any(ch not in _SYMBOLS for ch in w)]
        if self.min_doc_words and len(non_symbol) < self.min_doc_words:
            return 'gopher_short_doc'
        if self.max_doc_words and len(non_symbol) > self.max_doc_words:
            return 'gopher_long_doc'
        avg_len = sum(len(w) for w in non_symbol) / len(non_symbol) if non_symbol else float('nan')
        if self.min_avg_word_length and avg_len < self.min_avg_word_length:
            return 'gopher_below_avg_threshold'
        if self.max_avg_word_length and avg_len > self.max_avg_word_length:
            return 'gopher_above_avg_threshold'
        if self.max_symbol_word_ratio and text.count('#') / n_words > self.max_symbol_word_ratio:
            return 'gopher_too_many_hashes'
        ellipses = text.count('...') + text.count('…')
        if self.max_symbol_word_ratio and ellipses / n_words > self.max_symbol_word_ratio:
            return 'gopher_too_many_ellipsis'
        lines = text.splitlines()
        bullets = sum(s.lstrip().startswith(('•', '-')) for s in lines)
        if self.max_bullet_lines_ratio and bullets / len(lines) > self.max_bullet_lines_ratio:
            return 'gopher_too_many_bullets'
        end_ellipsis = sum(s.rstrip().endswith(('...', '…')) for s in lines)
        if (self.max_ellipsis_lines_ratio
                and end_ellipsis / len(lines) > self.max_ellipsis_lines_ratio):
            return 'gopher_too_many_end_ellipsis'
        alpha_words = sum(any(c.isalpha() for c in w) for w in words)
        if (self.max_non_alpha_words_ratio
                and alpha_words / n_words < self.max_non_alpha_words_ratio):
            return 'gopher_below_alpha_threshold'
        if self.min_stop_words and len(set(self.stop_words) & set(words)) < self.min_stop_words:
            return 'gopher_enough_stop_words'
        return doc
